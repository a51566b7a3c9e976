"""The batched vector environment: registration, spaces, autoreset, equivalence with the single env, seeding,
Monte Carlo samples, ordered passes, memory sharing and errors."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

from ram_env.envs import GlimpseEnv
from ram_env.vector import GlimpseVectorEnv

TINY = dict(dataset="tiny", glimpses=3, glimpse_size=4, num_scales=2)
CUDA = pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"))


def _vec(env_id: str = "RAM/MNIST-v0", num_envs: int = 4, device: str = "cpu", **kwargs) -> GlimpseVectorEnv:
    return gym.make_vec(
        f"ram_env:{env_id}",
        num_envs=num_envs,
        vectorization_mode="vector_entry_point",
        device=device,
        **kwargs,
    )


def _tiny_vec(num_envs: int = 4, **kwargs) -> GlimpseVectorEnv:
    return _vec("RAM/MNIST-v0", num_envs, **{**TINY, **kwargs})


def _actions(rng: np.random.Generator, num_envs: int, n_classes: int) -> dict[str, np.ndarray]:
    return {
        "location": rng.uniform(-1, 1, size=(num_envs, 2)).astype(np.float32),
        "label": rng.integers(0, n_classes, size=num_envs),
    }


def _run(env: GlimpseVectorEnv, seed: int, episodes: int, action_seed: int = 0) -> list[dict]:
    """Every glimpse, location, reward and index of ``episodes`` rounds of episodes (autoresets included)."""
    rng = np.random.default_rng(action_seed)
    obs, info = env.reset(seed=seed)
    record = [{"glimpse": obs["glimpse"].cpu(), "location": obs["location"].cpu(), "index": info["index"].cpu()}]
    for _ in range(episodes * env.config.glimpses):
        obs, reward, terminated, truncated, info = env.step(_actions(rng, env.num_envs, env.task.n_classes))
        step = {"glimpse": obs["glimpse"].cpu(), "location": obs["location"].cpu(), "reward": reward.cpu()}
        step["index"] = info["index"].cpu()
        if "final_obs" in info:
            step["final_glimpse"] = info["final_obs"]["glimpse"].cpu()
        record.append(step)
    return record


def _same_records(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(
        x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x) for x, y in zip(a, b, strict=True)
    )


# --------------------------------------------------------------------------------------- registration, spaces


def test_make_vec_gives_the_batched_env_for_every_id(registered_id, env_kwargs):
    envs = _vec(registered_id, num_envs=3, **env_kwargs(registered_id))
    single = gym.make(f"ram_env:{registered_id}", **env_kwargs(registered_id))
    assert isinstance(envs, GlimpseVectorEnv) and envs.num_envs == 3
    assert envs.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    assert envs.single_observation_space == single.observation_space
    assert envs.single_action_space == single.action_space
    assert envs.config == single.unwrapped.config
    obs, info = envs.reset(seed=0)
    k, c, g, _ = single.observation_space["glimpse"].shape
    assert obs["glimpse"].shape == (3, k, c, g, g) and obs["glimpse"].dtype == torch.float32
    assert obs["location"].shape == (3, 2) and obs["location"].dtype == torch.float32
    assert obs["t"].shape == (3,) and obs["t"].dtype == torch.int64 and not obs["t"].any()
    assert all(v.device.type == "cpu" for v in obs.values())
    assert info["label"].shape == (3,) and info["index"].shape == (3,)
    assert float(obs["glimpse"].min()) >= 0 and float(obs["glimpse"].max()) <= 1
    envs.action_space.seed(0)
    obs, reward, terminated, truncated, info = envs.step(envs.action_space.sample())
    assert reward.shape == (3,) and reward.dtype == torch.float32
    assert terminated.dtype == torch.bool and truncated.dtype == torch.bool
    assert envs.observation_space.contains({k: v.numpy() for k, v in obs.items()})
    envs.close()


@pytest.mark.requires_mnist
def test_readme_vector_snippet_runs(readme_snippet):
    code = readme_snippet("gym.make_vec(")
    if not torch.cuda.is_available():
        code = code.replace('device="cuda"', 'device="cpu"')  # the README's example names a GPU
    namespace: dict = {"gym": gym}  # imported by the README's previous example
    exec(compile(code, "README.md", "exec"), namespace)
    obs = namespace["obs"]
    assert isinstance(namespace["envs"], GlimpseVectorEnv) and obs["glimpse"].shape == (1024, 1, 1, 8, 8)
    assert obs["glimpse"].device.type == ("cuda" if torch.cuda.is_available() else "cpu")


# ---------------------------------------------------------------------------------------- episodes, autoreset


def test_episodes_end_together_with_same_step_autoreset():
    envs = _tiny_vec(num_envs=6, glimpses=3)
    rng = np.random.default_rng(0)
    obs, info = envs.reset(seed=1)
    for _ in range(4):
        labels = info["label"].clone()
        index = info["index"].clone()
        for t in range(1, 4):
            action = _actions(rng, 6, 4)
            if t == 3:  # guess right in the first three envs, wrong in the others
                action["label"] = np.where(np.arange(6) < 3, labels.numpy(), (labels.numpy() + 1) % 4)
            obs, reward, terminated, truncated, info = envs.step(action)
            assert not truncated.any()
            if t < 3:
                assert not terminated.any() and not reward.any() and "final_obs" not in info
                assert (obs["t"] == t).all() and torch.equal(info["index"], index)
                torch.testing.assert_close(obs["location"], torch.from_numpy(action["location"]))
            else:
                assert terminated.all() and info["_final_obs"].all() and info["_final_info"].all()
                final = info["final_info"]
                assert torch.equal(final["label"], labels) and torch.equal(final["index"], index)
                assert torch.equal(reward, (torch.from_numpy(action["label"]) == final["label"]).float())
                assert torch.equal(final["is_success"], reward.bool())
                assert reward.tolist() == [1, 1, 1, 0, 0, 0]
                assert (info["final_obs"]["t"] == 2).all()  # the finished episodes' last observation
                assert (obs["t"] == 0).all()  # the new episodes' first observation, same step
                assert torch.equal(info["label"], envs.labels[info["index"]])


def test_actions_as_numpy_or_torch_give_the_same_result():
    a, b = _tiny_vec(action_form="box"), _tiny_vec(action_form="box")
    a.reset(seed=3)
    b.reset(seed=3)
    rng = np.random.default_rng(0)
    for _ in range(7):
        action = rng.uniform(-1, 1, size=(4, 6)).astype(np.float32)
        out_a = a.step(action)
        out_b = b.step(torch.from_numpy(action))
        assert torch.equal(out_a[0]["glimpse"], out_b[0]["glimpse"]) and torch.equal(out_a[1], out_b[1])
    c = _tiny_vec(action_form="grid")
    c.reset(seed=0)
    obs, *_ = c.step(torch.tensor([[0, 8, 0], [8, 0, 1], [4, 4, 2], [2, 6, 3]]))
    torch.testing.assert_close(obs["location"], torch.tensor([[-1.0, 1], [1, -1], [0, 0], [-0.5, 0.5]]))


# -------------------------------------------------------------------------------- equivalence with GlimpseEnv


def _check_equivalence(env_id: str, device: str, num_envs: int = 5, episodes: int = 2, **kwargs) -> None:
    kwargs = dict(split="test", initial_location="center", **kwargs)
    envs = _vec(env_id, num_envs, device=device, **kwargs)
    single = gym.make(f"ram_env:{env_id}", **kwargs)
    glimpses = envs.config.glimpses
    rng = np.random.default_rng(0)
    actions = [[_actions(rng, num_envs, envs.task.n_classes) for _ in range(glimpses)] for _ in range(episodes)]
    # vector: per round of episodes, the glimpses at t = 0 .. glimpses - 1 and the final (repeated) one
    rounds = []
    obs, info = envs.reset(seed=0)
    for e in range(episodes):
        seen, index = [obs["glimpse"].cpu()], info["index"].cpu()
        for t in range(glimpses):
            obs, reward, terminated, _, info = envs.step(actions[e][t])
            seen.append((info["final_obs"] if t == glimpses - 1 else obs)["glimpse"].cpu())
        rounds.append((seen, index, reward.cpu()))
    # the single env, one episode after another, in the same ordered pass
    for e, (seen, index, reward) in enumerate(rounds):
        for j in range(num_envs):
            obs, info = single.reset() if (e, j) != (0, 0) else single.reset(seed=0)
            assert info["index"] == index[j] == e * num_envs + j
            np.testing.assert_allclose(seen[0][j].numpy(), obs["glimpse"], rtol=0, atol=1e-6)
            for t in range(glimpses):
                action = {"location": actions[e][t]["location"][j], "label": int(actions[e][t]["label"][j])}
                obs, r, terminated, _, _ = single.step(action)
                np.testing.assert_allclose(seen[t + 1][j].numpy(), obs["glimpse"], rtol=0, atol=1e-6)
            assert terminated and r == float(reward[j])


@pytest.mark.parametrize("device", ["cpu", CUDA])
@pytest.mark.parametrize(
    "env_id",
    [
        pytest.param(i, marks=pytest.mark.requires_mnist)
        for i in ("RAM/MNIST-v0", "RAM/TranslatedMNIST60-v0", "RAM/ClutteredMNIST60-v0")
    ],
)
def test_vector_matches_single_env_on_the_test_split(env_id, device):
    _check_equivalence(env_id, device)


@pytest.mark.parametrize("device", ["cpu", CUDA])
def test_vector_matches_single_env_tiny_cluttered(device):
    _check_equivalence("RAM/MNIST-v0", device, num_envs=7, episodes=3, **TINY, canvas_size=30, clutter_pieces=3)


def test_vector_matches_single_env_cifar_rgb(env_kwargs):
    _check_equivalence("RAM/CIFAR10-v0", "cpu", num_envs=4, **env_kwargs("RAM/CIFAR10-v0"))


@pytest.mark.parametrize("mc_samples", [1, 3])
def test_vector_matches_single_env_on_the_training_path(mc_samples):
    """Train split, random first locations, same-step autoresets (the path training and evaluation take): each vector
    episode, replayed in the single env on the image ``info["index"]`` names, from the same first location and with
    the same actions, gives the same glimpses and reward."""
    kwargs = dict(**TINY, split="train", initial_location="random", scale=3)
    num_envs, episodes, glimpses = 6, 3, TINY["glimpses"]
    envs = GlimpseVectorEnv(num_envs, mc_samples=mc_samples, **kwargs)
    rng = np.random.default_rng(1)
    rounds = []
    obs, info = envs.reset(seed=4)
    for _ in range(episodes):  # the second and third rounds start at autoresets
        index, first = info["index"].clone(), obs["location"].clone()
        seen, actions = [obs["glimpse"].clone()], []
        for t in range(glimpses):
            actions.append(_actions(rng, num_envs, envs.task.n_classes))
            obs, reward, terminated, _, info = envs.step(actions[-1])
            assert bool(terminated.all()) == (t == glimpses - 1)
            seen.append((info["final_obs"] if t == glimpses - 1 else obs)["glimpse"].clone())
        rounds.append((index, first, seen, actions, reward.clone()))
    firsts = torch.stack([first for _, first, *_ in rounds])  # (episodes, N, 2)
    assert (firsts.abs() > 0.05).any(-1).all(), "the first locations should be random, not the centre"
    assert len({tuple(index.tolist()) for index, *_ in rounds}) == episodes, "each autoreset should draw new images"

    single = GlimpseEnv(**kwargs)
    for index, first, seen, actions, reward in rounds:
        for j in range(num_envs):
            obs, info = single.reset(options={"index": int(index[j]), "location": first[j].numpy()})
            assert info["index"] == int(index[j])
            np.testing.assert_array_equal(obs["location"], first[j].numpy())
            np.testing.assert_allclose(seen[0][j].numpy(), obs["glimpse"], rtol=0, atol=1e-6)
            for t in range(glimpses):
                action = {"location": actions[t]["location"][j], "label": int(actions[t]["label"][j])}
                obs, r, terminated, _, _ = single.step(action)
                np.testing.assert_allclose(seen[t + 1][j].numpy(), obs["glimpse"], rtol=0, atol=1e-6)
            assert terminated and r == float(reward[j])


def test_softmax_reward_matches_the_single_env_and_keeps_success_by_argmax():
    kwargs = dict(**TINY, split="validation", action_form="box", reward="softmax")
    envs = GlimpseVectorEnv(5, **kwargs)
    n = envs.task.n_classes
    rng = np.random.default_rng(3)
    obs, info = envs.reset(seed=0)
    index, first = info["index"].clone(), obs["location"].clone()
    actions = [rng.uniform(-1, 1, size=(5, 2 + n)).astype(np.float32) for _ in range(TINY["glimpses"])]
    for action in actions:
        _, reward, _, _, info = envs.step(action)
    scores = torch.as_tensor(actions[-1][:, 2:], dtype=torch.float64)
    label = info["final_info"]["label"]
    torch.testing.assert_close(reward, torch.softmax(5.0 * scores, dim=1)[torch.arange(5), label].float())
    assert torch.equal(info["final_info"]["is_success"], scores.argmax(dim=1) == label)
    single = GlimpseEnv(**kwargs)
    for j in range(5):
        single.reset(options={"index": int(index[j]), "location": first[j].numpy()})
        for action in actions:
            *_, r, _, _, _ = single.step(action[j])
        assert r == pytest.approx(float(reward[j]), abs=1e-6)


# ---------------------------------------------------------------------------------------------------- seeding


@pytest.mark.parametrize("kwargs", [dict(**TINY), dict(**TINY, canvas_size=24, clutter_pieces=2, clutter_size=4)])
def test_same_seed_same_observations_different_seed_differs(kwargs):
    a = _run(_tiny_vec(num_envs=6, **kwargs), seed=5, episodes=3)
    b = _run(_tiny_vec(num_envs=6, **kwargs), seed=5, episodes=3)
    assert sum("final_glimpse" in step for step in a) == 3  # three autoresets
    assert _same_records(a, b)
    c = _run(_tiny_vec(num_envs=6, **kwargs), seed=6, episodes=3)
    assert not _same_records(a, c)
    assert not torch.equal(a[0]["index"], c[0]["index"])


@pytest.mark.requires_mnist
def test_same_seed_same_observations_cluttered_mnist():
    a = _run(_vec("RAM/ClutteredMNIST60-v0", num_envs=4), seed=0, episodes=2)
    b = _run(_vec("RAM/ClutteredMNIST60-v0", num_envs=4), seed=0, episodes=2)
    assert _same_records(a, b)


# ---------------------------------------------------------------------------------------- Monte Carlo samples


def test_mc_samples_share_image_and_canvas():
    m, groups = 3, 4
    envs = _tiny_vec(num_envs=m * groups, mc_samples=m, canvas_size=24, clutter_pieces=2, clutter_size=4)
    obs, info = envs.reset(seed=0)
    for _ in range(3):  # the reset and two autoresets
        index = info["index"].reshape(groups, m)
        assert (index == index[:, :1]).all()
        assert envs.canvas.shape == (groups, 1, 24, 24)  # one canvas per distinct image
        first = obs["location"].reshape(groups, m, 2)
        assert (first[:, 0] != first[:, 1]).any()  # the samples start at different places
        # all envs look at the same place: the samples of one image see the same pixels, other images differ
        same = {
            "location": np.tile(np.array([[0.1, -0.2]], np.float32), (m * groups, 1)),
            "label": np.zeros(12),
        }
        obs, *_ = envs.step(same)
        seen = obs["glimpse"].reshape(groups, m, -1)
        assert (seen == seen[:, :1]).all()
        for _ in range(envs.config.glimpses - 1):
            obs, _, terminated, _, info = envs.step(same)
        assert terminated.all()


def test_ordered_pass_with_mc_samples_covers_every_index_once():
    n_envs, m = 10, 2
    envs = _tiny_vec(num_envs=n_envs, mc_samples=m, split="validation", glimpses=1)
    n = len(envs.task.data)
    batches = math.ceil(n / (n_envs // m))
    assert (n, batches) == (64, 13)
    _, info = envs.reset(seed=0)
    order = []
    for _ in range(batches):
        index = info["index"]
        assert torch.equal(index[::m], index[1::m])
        order += index[::m].tolist()
        _, _, terminated, _, info = envs.step(envs.action_space.sample())
        assert terminated.all()
    assert order[:n] == list(range(n))
    assert order[n:] == [0]  # the wrapped repeat an evaluation drops
    _, info = envs.reset()
    assert info["index"][::m].tolist() == list(range(5))  # reset starts a new pass


# ----------------------------------------------------------------------------------------------------- memory


def test_envs_share_one_copy_of_the_data_set():
    small = _tiny_vec(num_envs=2)
    big = _tiny_vec(num_envs=8192, canvas_size=20)
    other_split = _tiny_vec(num_envs=2, split="test")
    assert big.images.data_ptr() == small.images.data_ptr()
    assert big.labels.data_ptr() == small.labels.data_ptr()
    assert other_split.images.data_ptr() != small.images.data_ptr()


# ----------------------------------------------------------------------------------------------------- errors


def test_bad_input_raises():
    envs = _tiny_vec(num_envs=4)
    with pytest.raises(RuntimeError, match=r"call reset\(\) before step\(\)"):
        envs.step(envs.action_space.sample())
    envs.reset(seed=0)
    bad = {"location": np.zeros((4, 2), np.float32), "label": np.zeros(4, np.int64)}
    bad["location"][2, 1] = np.nan
    with pytest.raises(ValueError, match="location must be finite"):
        envs.step(bad)
    bad["location"][2, 1] = 1.5
    with pytest.raises(ValueError, match=r"location must lie in \[-1, 1\]"):
        envs.step(bad)
    bad["location"][2, 1] = 0
    bad["label"][0] = 4
    with pytest.raises(ValueError, match=r"label must lie in \[0, 4\)"):
        envs.step(bad)
    with pytest.raises(ValueError, match=r"location must have shape \(4, 2\)"):
        envs.step({"location": np.zeros((3, 2), np.float32), "label": np.zeros(4, np.int64)})
    box = _tiny_vec(num_envs=4, action_form="box")
    box.reset(seed=0)
    with pytest.raises(ValueError, match="must be finite"):
        box.step(torch.full((4, 6), float("nan")))
    with pytest.raises(ValueError, match=r"must be a multiple of mc_samples"):
        _tiny_vec(num_envs=10, mc_samples=3)
    with pytest.raises(ValueError, match="num_envs must be a positive integer"):
        _tiny_vec(num_envs=0)
    with pytest.raises(TypeError, match="unknown environment argument"):
        _tiny_vec(glimpse_sise=3)
    with pytest.raises(ValueError, match="does not render"):
        GlimpseVectorEnv(2, render_mode="rgb_array", **TINY)


def test_unvalidated_actions_are_clamped_not_checked():
    """``validate_actions=False`` (the trainer's setting) skips the checks and their device sync, and clamps."""
    checked, trusted = _tiny_vec(num_envs=4), _tiny_vec(num_envs=4, validate_actions=False)
    far = {"location": np.full((4, 2), 1.5, np.float32), "label": np.zeros(4, np.int64)}
    edge = {"location": np.ones((4, 2), np.float32), "label": np.zeros(4, np.int64)}
    for env in (checked, trusted):
        env.reset(seed=5)
    with pytest.raises(ValueError, match=r"location must lie in \[-1, 1\]"):
        checked.step(far)
    obs_far = trusted.step(far)[0]
    obs_edge = checked.step(edge)[0]  # the same episodes, moved to the corner (1, 1)
    assert torch.equal(obs_far["location"], obs_edge["location"])
    assert torch.equal(obs_far["glimpse"], obs_edge["glimpse"])
