"""The single env: env checkers on every id, seeding, episode structure, action forms, errors, render."""

from __future__ import annotations

import math
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from ram_env import BENCHMARKS
from ram_env.envs import GlimpseEnv
from ram_env.sensor import glimpse_numpy

ACTION_FORMS = ("dict", "box", "grid")
#: warnings stable-baselines3's checker is expected to give, and why. Everything else fails the test.
SB3_EXPECTED_WARNINGS = [
    # The glimpse is (k, C, g, g), by design: policies flatten it or use a custom extractor.
    (UserWarning, r"Your observation glimpse has an unconventional shape"),
]
TINY = dict(dataset="tiny", glimpses=3, glimpse_size=4, num_scales=2)


def _make(env_id: str = "RAM/MNIST-v0", **kwargs) -> gym.Env:
    return gym.make(f"ram_env:{env_id}", **kwargs)


def _tiny(**kwargs) -> gym.Env:
    return gym.make("ram_env:RAM/MNIST-v0", **{**TINY, **kwargs})


def _assert_same(a, b, path="") -> None:
    """Deep equality of observations / infos (dicts, arrays, scalars)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{path}: keys {sorted(a)} != {sorted(b)}"
        for key in a:
            _assert_same(a[key], b[key], f"{path}/{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{path}: lengths {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{path}[{i}]")
    else:
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=path)


def _rollout(env: gym.Env, seed: int, episodes: int) -> list:
    """Every (obs, reward, terminated, truncated, info) of ``episodes`` episodes, seeded random actions."""
    env.action_space.seed(seed)
    record = []
    obs, info = env.reset(seed=seed)
    for _ in range(episodes):
        record.append((obs, info))
        terminated = False
        while not terminated:
            obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
            record.append((obs, reward, terminated, truncated, info))
        obs, info = env.reset()
    return record


# ------------------------------------------------------------------------------------------------- checkers


@pytest.mark.parametrize("action_form", ACTION_FORMS)
def test_gymnasium_check_env_without_warnings(registered_id, action_form, env_kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning is expected from gymnasium's checker
        env = _make(registered_id, action_form=action_form, render_mode="rgb_array", **env_kwargs(registered_id))
        check_env(env.unwrapped)
        # gym.make's own passive checker and order enforcing wrap a short rollout too
        env.reset(seed=0)
        env.action_space.seed(0)
        for _ in range(env.unwrapped.config.glimpses):
            env.step(env.action_space.sample())
        assert env.render().dtype == np.uint8
        env.close()


@pytest.mark.parametrize("action_form", ["box", "grid"])
def test_stable_baselines3_check_env(registered_id, action_form, env_kwargs):
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = _make(registered_id, action_form=action_form, **env_kwargs(registered_id))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for category, message in SB3_EXPECTED_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category)
        sb3_check_env(env.unwrapped, warn=True)


# --------------------------------------------------------------------------------------------------- seeding


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param(dict(**TINY), id="tiny"),
        pytest.param(dict(**TINY, canvas_size=28, clutter_pieces=3, clutter_size=5), id="tiny-cluttered"),
        pytest.param(dict(**TINY, action_form="grid", initial_location="center"), id="tiny-grid"),
    ],
)
def test_same_seed_same_rollout_different_seed_differs(kwargs):
    a = _rollout(gym.make("ram_env:RAM/MNIST-v0", **kwargs), seed=123, episodes=5)
    b = _rollout(gym.make("ram_env:RAM/MNIST-v0", **kwargs), seed=123, episodes=5)
    assert len(a) == len(b) == 5 * (1 + TINY["glimpses"])
    for step_a, step_b in zip(a, b, strict=True):
        _assert_same(list(step_a), list(step_b))
    c = _rollout(gym.make("ram_env:RAM/MNIST-v0", **kwargs), seed=124, episodes=5)
    with pytest.raises(AssertionError):
        for step_a, step_c in zip(a, c, strict=True):
            _assert_same(list(step_a), list(step_c))
    assert [s[1]["index"] for s in a if len(s) == 2] != [s[1]["index"] for s in c if len(s) == 2]


@pytest.mark.requires_mnist
def test_same_seed_same_rollout_cluttered_mnist():
    a = _rollout(_make("RAM/ClutteredMNIST60-v0", action_form="box"), seed=7, episodes=3)
    b = _rollout(_make("RAM/ClutteredMNIST60-v0", action_form="box"), seed=7, episodes=3)
    for step_a, step_b in zip(a, b, strict=True):
        _assert_same(list(step_a), list(step_b))


# ------------------------------------------------------------------------------------------ episode structure


@pytest.mark.parametrize("glimpses", [1, 3])
def test_episode_structure(glimpses):
    env = _tiny(glimpses=glimpses)
    env.action_space.seed(0)
    space = env.observation_space
    for episode in range(8):
        obs, info = env.reset(seed=episode if episode == 0 else None)
        assert space.contains(obs) and obs["t"] == 0
        assert set(info) == {"label", "index"}
        label, index = info["label"], info["index"]
        assert label == int(env.unwrapped.task.data.labels[index])
        for t in range(1, glimpses + 1):
            action = env.action_space.sample()
            obs, reward, terminated, truncated, info = env.step(action)
            assert space.contains(obs)
            assert info["label"] == label and info["index"] == index
            assert truncated is False
            if t < glimpses:
                assert obs["t"] == t and reward == 0.0 and terminated is False and "is_success" not in info
                np.testing.assert_array_equal(obs["location"], action["location"])
            else:
                assert terminated is True
                assert obs["t"] == glimpses - 1
                assert info["is_success"] == (int(action["label"]) == label)
                assert reward == float(int(action["label"]) == label)
                assert isinstance(reward, float)
        with pytest.raises(RuntimeError, match="reset"):
            env.unwrapped.step(env.action_space.sample())


def test_reward_is_one_exactly_when_the_label_is_right():
    env = _tiny(glimpses=2)
    rewards = {True: set(), False: set()}
    for episode in range(6):
        _, info = env.reset(seed=episode)
        for guess in range(4):  # every label on the same episode, via fresh resets with the same seed
            _, info = env.reset(seed=episode)
            env.step({"location": np.zeros(2, np.float32), "label": 0})
            _, reward, terminated, _, info = env.step({"location": np.zeros(2, np.float32), "label": guess})
            assert terminated
            rewards[guess == info["label"]].add(reward)
            assert info["is_success"] == (guess == info["label"])
    assert rewards == {True: {1.0}, False: {0.0}}


def test_observation_is_the_glimpse_of_the_canvas_at_the_location():
    env = _tiny(canvas_size=24, clutter_pieces=2, clutter_size=4)
    obs, _ = env.reset(seed=3)
    inner = env.unwrapped
    sensor = inner.config.sensor
    canvas = inner.canvas
    assert canvas.shape == (1, 24, 24) and canvas.dtype == np.uint8
    for location in ([0.5, -0.25], [-1.0, 1.0]):
        want = glimpse_numpy(canvas, np.asarray(location), glimpse_size=sensor.glimpse_size, num_scales=2)
        obs, *_ = env.step({"location": np.asarray(location, np.float32), "label": 0})
        np.testing.assert_array_equal(obs["glimpse"], want)


@pytest.mark.parametrize("split", ["validation", "test"])
def test_ordered_pass_visits_every_image_once(split):
    env = _tiny(split=split, glimpses=1)
    n = len(env.unwrapped.task.data)
    assert n == 64
    seen = []
    for i in range(n):
        _, info = env.reset(seed=i)  # seeding does not change the order
        seen.append(info["index"])
        env.step(env.action_space.sample())
    assert seen == list(range(n))
    _, info = env.reset()
    assert info["index"] == 0  # wraps around


def test_fixed_canvases_do_not_depend_on_the_seed():
    kwargs = dict(split="test", canvas_size=30, clutter_pieces=3, clutter_size=4)
    a, b = _tiny(**kwargs), _tiny(**kwargs)
    a.reset(seed=1)
    b.reset(seed=2)
    np.testing.assert_array_equal(a.unwrapped.canvas, b.unwrapped.canvas)


def test_train_split_is_random_not_ordered():
    env = _tiny()
    indices = [env.reset(seed=s)[1]["index"] for s in range(20)]
    assert indices != list(range(20)) and len(set(indices)) > 5


def test_initial_location_center_and_random():
    center = _tiny(initial_location="center")
    for seed in range(3):
        obs, _ = center.reset(seed=seed)
        np.testing.assert_array_equal(obs["location"], [0.0, 0.0])
    random = _tiny(initial_location="random")
    firsts = np.array([random.reset(seed=seed)[0]["location"] for seed in range(20)])
    assert firsts.dtype == np.float32
    assert (np.abs(firsts) <= 1).all() and firsts.std(axis=0).min() > 0.2
    assert firsts.min() < -0.5 and firsts.max() > 0.5


def test_reset_options_choose_the_image_and_first_location():
    env = _tiny().unwrapped
    obs, info = env.reset(seed=0, options={"index": 5, "location": (0.25, -0.5)})
    assert info["index"] == 5
    np.testing.assert_array_equal(obs["location"], np.float32([0.25, -0.5]))
    for options, message in [
        ({"index": 256}, r"index must be an integer in \[0, 256\)"),
        ({"index": 1.0}, "index must be an integer"),
        ({"location": (1.5, 0.0)}, "location must be a finite"),
        ({"location": (0.0, 0.0, 0.0)}, "location must be a finite"),
        ({"image": 3}, "unknown reset option"),
    ]:
        with pytest.raises(ValueError, match=message):
            env.reset(options=options)
    ordered = _tiny(split="test").unwrapped
    assert ordered.reset(options={"index": 10})[1]["index"] == 10
    assert [ordered.reset()[1]["index"] for _ in range(2)] == [0, 1]  # the ordered pass did not advance


def test_render_rgb_array():
    env = _tiny(render_mode="rgb_array", canvas_size=32)
    env.reset(seed=0)
    first = env.render()
    assert first.ndim == 3 and first.shape[2] == 3 and first.dtype == np.uint8
    assert min(first.shape[:2]) >= 256  # upscaled
    env.step({"location": np.array([0.8, -0.8], np.float32), "label": 0})
    second = env.render()
    assert second.shape == first.shape and not np.array_equal(first, second)
    plain = _tiny()
    plain.reset(seed=0)
    assert plain.render() is None  # no render_mode: nothing drawn


def test_glimpses_override():
    env = _make("RAM/MNIST-v0", dataset="tiny", glimpses=4)
    assert env.unwrapped.config.glimpses == 4 and env.observation_space["t"].n == 4
    env.reset(seed=0)
    steps = 0
    terminated = False
    while not terminated:
        _, _, terminated, _, _ = env.step(env.action_space.sample())
        steps += 1
    assert steps == 4


@pytest.mark.requires_mnist
def test_registered_defaults_and_override_on_mnist():
    env = _make("RAM/MNIST-v0", glimpses=4)
    obs, _ = env.reset(seed=0)
    assert obs["glimpse"].shape == (1, 1, 8, 8)
    steps = 0
    while True:
        steps += 1
        if env.step(env.action_space.sample())[2]:
            break
    assert steps == 4
    cluttered = _make("RAM/ClutteredMNIST100-v0")
    obs, _ = cluttered.reset(seed=0)
    assert obs["glimpse"].shape == (4, 1, 12, 12) and cluttered.unwrapped.canvas.shape == (1, 100, 100)


@pytest.mark.requires_mnist
def test_readme_environment_snippet_runs(readme_snippet):
    namespace: dict = {}
    exec(compile(readme_snippet('gym.make("ram_env:RAM/ClutteredMNIST60-v0"'), "README.md", "exec"), namespace)
    env = namespace["env"]
    assert env.unwrapped.config.glimpses == 8 and env.render().dtype == np.uint8
    assert namespace["obs"]["glimpse"].shape == (3, 1, 12, 12)
    assert namespace["reward"] == 0.0 and not namespace["terminated"]  # one glimpse of eight taken


# ----------------------------------------------------------------------------------------------- action forms


def test_box_form_reads_location_and_argmax_label():
    env = _tiny(action_form="box", glimpses=2)
    n = env.unwrapped.task.n_classes
    assert env.action_space.shape == (2 + n,)
    _, info = env.reset(seed=0)
    label = info["label"]
    action = np.full(2 + n, -0.5, np.float32)
    action[:2] = [0.25, -0.75]
    obs, *_ = env.step(action)
    np.testing.assert_array_equal(obs["location"], [0.25, -0.75])
    action[2 + label] = 0.9  # argmax -> the right class
    _, reward, terminated, _, _ = env.step(action)
    assert terminated and reward == 1.0
    env.reset(seed=0)
    env.step(action)
    action[2 + (label + 1) % n] = 1.0  # argmax -> a wrong class
    assert env.step(action)[1] == 0.0


def test_softmax_reward_is_the_probability_the_class_scores_give_the_true_class():
    env = _tiny(action_form="box", glimpses=2, reward="softmax")
    n = env.unwrapped.task.n_classes
    _, info = env.reset(seed=0)
    label = info["label"]
    action = np.full(2 + n, -1.0, np.float32)
    action[:2] = 0.0
    env.step(action)
    action[2 + label] = 1.0  # the true class scored 1, the others -1
    _, reward, terminated, _, info = env.step(action)
    assert terminated and info["is_success"]
    assert reward == pytest.approx(math.exp(5) / (math.exp(5) + (n - 1) * math.exp(-5)))
    env.reset(seed=0)
    env.step(action)
    action[2 + label] = 0.5
    action[2 + (label + 1) % n] = 0.75  # a wrong class highest: no success, yet a reward that grows with the true score
    _, reward, _, _, info = env.step(action)
    scores = 5.0 * action[2:].astype(np.float64)
    assert not info["is_success"]
    assert reward == pytest.approx(math.exp(scores[label]) / np.exp(scores).sum())
    assert 0.0 < reward < 0.5


def test_grid_form_maps_cells_to_locations():
    grid = 5
    env = _tiny(action_form="grid", grid_size=grid, glimpses=4)
    assert list(env.action_space.nvec) == [grid, grid, 4]
    _, info = env.reset(seed=0)
    expected = {(0, grid - 1): (-1.0, 1.0), (grid - 1, 0): (1.0, -1.0), ((grid - 1) // 2, 1): (0.0, -0.5)}
    for (i, j), location in expected.items():
        obs, *_ = env.step(np.array([i, j, 0]))
        np.testing.assert_allclose(obs["location"], location, atol=1e-7)
    _, reward, *_ = env.step(np.array([0, 0, info["label"]]))
    assert reward == 1.0


# ------------------------------------------------------------------------------------------------- bad input


def _ready(**kwargs) -> GlimpseEnv:
    env = _tiny(**kwargs).unwrapped
    env.reset(seed=0)
    return env


@pytest.mark.parametrize(
    "location, message",
    [
        ([math.nan, 0.0], "location must be finite"),
        ([0.0, math.inf], "location must be finite"),
        ([-math.inf, 0.0], "location must be finite"),
        ([1.5, 0.0], r"location must lie in \[-1, 1\]"),
        ([0.0, -1.01], r"location must lie in \[-1, 1\]"),
    ],
)
def test_bad_location_is_rejected(location, message):
    env = _ready()
    with pytest.raises(ValueError, match=message):
        env.step({"location": np.asarray(location, np.float32), "label": 0})
    box = _ready(action_form="box")
    with pytest.raises(ValueError, match=message):
        box.step(np.asarray([*location, 0, 0, 0, 1], np.float32))


@pytest.mark.parametrize("label", [-1, 4])
def test_bad_label_is_rejected(label):
    env = _ready()  # tiny: 4 classes
    with pytest.raises(ValueError, match=r"label must lie in \[0, 4\)"):
        env.step({"location": np.zeros(2, np.float32), "label": label})
    grid = _ready(action_form="grid")
    with pytest.raises(ValueError, match=r"'grid' action must lie in"):
        grid.step(np.array([0, 0, label]))


def test_bad_action_shapes_and_types_are_rejected():
    box = _ready(action_form="box")
    with pytest.raises(ValueError, match=r"action must have shape \(6,\), got \(5,\)"):
        box.step(np.zeros(5, np.float32))
    with pytest.raises(ValueError, match="class scores must be finite"):
        box.step(np.array([0, 0, np.nan, 0, 0, 0], np.float32))
    env = _ready()
    with pytest.raises(ValueError, match="keys 'location' and 'label'.*got dict with keys \\['location'\\]"):
        env.step({"location": np.zeros(2, np.float32)})
    with pytest.raises(ValueError, match="'dict' action must be a dict"):
        env.step(np.zeros(6, np.float32))
    with pytest.raises(ValueError, match=r"location must have shape \(2,\)"):
        env.step({"location": np.zeros(3, np.float32), "label": 0})
    with pytest.raises(ValueError, match="label must hold integers"):
        env.step({"location": np.zeros(2, np.float32), "label": 1.5})
    grid = _ready(action_form="grid")
    with pytest.raises(ValueError, match="'grid' action must lie in"):
        grid.step(np.array([9, 0, 0]))


def test_step_before_reset():
    env = _tiny().unwrapped
    with pytest.raises(RuntimeError, match=r"call reset\(\) before step\(\)"):
        env.step({"location": np.zeros(2, np.float32), "label": 0})
    wrapped = _tiny()
    with pytest.raises(gym.error.ResetNeeded):
        wrapped.step(wrapped.action_space.sample())


def test_bad_constructor_arguments():
    with pytest.raises(TypeError, match="unknown environment argument.*glimpse_sise"):
        _tiny(glimpse_sise=8)
    with pytest.raises(ValueError, match="unknown split 'val'"):
        _tiny(split="val")
    with pytest.raises(ValueError, match="canvas_size=10 is smaller than the images"):
        _tiny(canvas_size=10)
    with pytest.raises(ValueError, match="unknown action_form 'discrete'"):
        _tiny(action_form="discrete")
    with pytest.raises(ValueError, match="unknown initial_location"):
        _tiny(initial_location="corner")
    with pytest.raises(ValueError, match="unknown reward 'score'"):
        _tiny(reward="score")
    with pytest.raises(ValueError, match="reward='softmax' reads the class scores of the 'box' action form"):
        _tiny(reward="softmax", action_form="grid")
    with pytest.raises(ValueError, match="glimpses must be a positive integer"):
        _tiny(glimpses=0)
    with pytest.raises(ValueError, match="unknown render_mode"):
        GlimpseEnv(render_mode="ansi", dataset="tiny")
    with pytest.raises(ValueError, match="unknown data set"):
        _make("RAM/MNIST-v0", dataset="mnist2")


def test_oversized_glimpse_warns():
    from ram_env.task import Task, TaskConfig

    # tiny images are 16 x 16: an 8 x 8 glimpse fits, up to 3 scales of 2 (largest patch 32 = 2x the side) is quiet
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Task(TaskConfig(dataset="tiny", glimpse_size=8, num_scales=3))
        Task(TaskConfig(dataset="tiny", glimpse_size=4, num_scales=5))  # largest patch 64 = exactly 4x
        TaskConfig(canvas_size=100, glimpse_size=12, num_scales=4)  # 96 on 100: ClutteredMNIST100
    with pytest.warns(UserWarning, match="glimpse_size 20 is larger than the 16 x 16 canvas"):
        Task(TaskConfig(dataset="tiny", glimpse_size=20))
    with pytest.warns(UserWarning, match=r"largest patch .* 128 pixels\) is more than 4x the 16 x 16 canvas"):
        Task(TaskConfig(dataset="tiny", glimpse_size=8, num_scales=5))
    with pytest.warns(UserWarning, match="largest patch"):
        TaskConfig(canvas_size=40, glimpse_size=12, num_scales=5)  # known without loading any data
    with pytest.warns(UserWarning, match="larger than the 40 x 40 canvas"):
        _tiny(canvas_size=40, glimpse_size=48)


def test_registered_envs_do_not_warn_about_the_glimpse():
    from ram_env.task import TaskConfig

    image_side = {"mnist": 28, "omniglot": 105, "cifar10": 32}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for kwargs in BENCHMARKS.values():
            config = TaskConfig(**kwargs)
            side = config.canvas_size or image_side[config.dataset]
            config.check_glimpse_fits(side, side)
