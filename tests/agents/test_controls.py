"""The paper's controls: whole-image fc / conv networks on the environments' canvases, and random glimpses."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from agents.checkpoint import load_checkpoint
from agents.config import UserError, resolve_config
from agents.controls import (
    CanvasBatches,
    ControlConfig,
    ConvClassifier,
    FCClassifier,
    build_control,
    parse_args,
    train_control,
)
from agents.policies import evaluate_checkpoint
from agents.ram import RAMConfig, RecurrentAttentionModel
from agents.rollout import EpisodeRunner, hybrid_loss, rollout
from evaluate import main as evaluate_main
from ram_env.canvas import compose_numpy
from ram_env.vector import GlimpseVectorEnv

CLUTTERED_TINY = {"dataset": "tiny", "canvas_size": 24, "clutter_pieces": 2, "clutter_size": 4}


def test_training_batches_are_the_vector_envs_canvases():
    data = CanvasBatches(CLUTTERED_TINY, "train")
    x, y = data.sample(16, torch.Generator().manual_seed(11))
    env = GlimpseVectorEnv(16, **CLUTTERED_TINY)
    _, info = env.reset(seed=11)
    assert x.shape == (16, 1, 24, 24) and x.dtype == torch.float32
    assert torch.equal(x, env.canvas.float() / 255.0)
    assert torch.equal(y, info["label"])


def test_ordered_pass_is_every_fixed_canvas_once_in_order():
    data = CanvasBatches(CLUTTERED_TINY, "test")
    batches = list(data.ordered(batch=24))
    assert [len(y) for _, y in batches] == [24, 24, 16]  # 64 test images
    x = torch.cat([b[0] for b in batches])
    task = data.task
    for i in (0, 23, 24, 63):  # the numpy twin of the composition, on the split's fixed layout
        expected = compose_numpy(task.data.images, task.fixed_layout, task.config.canvas, i)
        assert np.array_equal((x[i] * 255).round().to(torch.uint8).numpy(), expected)
    assert torch.equal(torch.cat([b[1] for b in batches]), data.labels)


def test_models_map_canvases_to_logits_and_rebuild_from_their_args():
    x = torch.rand(5, 1, 60, 60)
    fc = FCClassifier((1, 60, 60), 10)
    conv = ConvClassifier((1, 60, 60), 10)  # the paper's: 8 filters 10 x 10 stride 5 -> 8 x 11 x 11, then 256
    assert fc(x).shape == conv(x).shape == (5, 10)
    assert conv.net[3].in_features == 8 * 11 * 11
    assert sum(p.numel() for p in fc.parameters()) == 3600 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10
    rebuilt = build_control({"kind": "conv", "input_shape": [1, 60, 60], "n_classes": 10, "filters": 8})
    assert isinstance(rebuilt, ConvClassifier)
    with pytest.raises(UserError, match="unknown control"):
        build_control({"kind": "mlp", "input_shape": [1, 8, 8], "n_classes": 2})


def test_command_line_maps_task_names_and_rejects_conflicts():
    config = parse_args(["--task", "cluttered60", "--model", "conv", "--minutes", "2"])
    assert config.env == "RAM/ClutteredMNIST60-v0" and config.model == "conv" and config.minutes == 2.0
    with pytest.raises(UserError, match="conflicts"):
        parse_args(["--task", "mnist", "--env", "RAM/ClutteredMNIST60-v0"])
    with pytest.raises(UserError, match="minutes"):
        parse_args(["--minutes", "0"])


@pytest.fixture(scope="module")
def tiny_control(tmp_path_factory):
    """An fc control trained for a few epochs on the tiny data set (a few seconds)."""
    path = tmp_path_factory.mktemp("control") / "tiny-fc.pt"
    config = ControlConfig(
        env_args="dataset=tiny", model="fc", minutes=1.0, max_epochs=6, epoch_images=2560, output=str(path), seed=2
    )
    train_control(config, log=False)
    return path


def test_control_learns_and_keeps_its_best_validation_epoch(tiny_control):
    payload = load_checkpoint(tiny_control)
    assert payload["algo"] == "fc" and payload["env_kwargs"]["dataset"] == "tiny"
    history = payload["history"]
    assert len(history) == 6 and payload["run"]["stopped"] == "max epochs"
    best = min(history, key=lambda r: r["val_error"])
    assert payload["best_val"] == best["val_error"] and payload["epoch"] == best["epoch"]
    assert payload["best_val"] < 40.0  # 4 classes: chance is 75 %
    assert set(payload["provenance"]) == {"git_commit", "hardware"}
    # The shipped weights are the best epoch's: re-scoring the validation split gives its error exactly.
    result, report = evaluate_checkpoint(payload, split="validation", mc_samples=10, seed=0)
    assert result.error_mean_location == pytest.approx(payload["best_val"], abs=1e-9)


def test_control_checkpoint_is_scored_by_evaluate_py(tiny_control, tmp_path):
    out = tmp_path / "report.json"
    code = evaluate_main([str(tiny_control), "--json", str(out), "--plot", str(tmp_path / "fig"), "--device", "cpu"])
    assert code == 0
    report = json.loads(out.read_text())
    assert report["deterministic"] is True and report["algo"] == "fc" and report["episodes"] == 64
    assert report["error_sampled"] == report["error_mean_location"] == report["error_monte_carlo"]
    assert (tmp_path / "fig" / "confusion.png").is_file()
    assert not (tmp_path / "fig" / "glimpses.png").exists()  # a whole-image network takes no glimpses


def test_control_training_is_repeatable(tmp_path):
    def run(name: str) -> dict:
        config = ControlConfig(
            env="RAM/MNIST-v0",
            env_args="dataset=tiny,canvas_size=24,clutter_pieces=2,clutter_size=4",
            model="conv",
            conv_kernel=6,
            conv_stride=3,
            max_epochs=2,
            epoch_images=640,
            output=str(tmp_path / name),
        )
        return train_control(config, log=False)

    a, b = run("a.pt"), run("b.pt")
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert [r["val_error"] for r in a["history"]] == [r["val_error"] for r in b["history"]]


# ------------------------------------------------------------------------------------------ random glimpses

TINY_GLIMPSES = {"dataset": "tiny", "glimpses": 4, "glimpse_size": 4, "num_scales": 2, "canvas_size": 24}
SMALL = {"hidden_size": 32, "glimpse_hidden": 16, "glimpse_out": 32}


def _random_agent(seed: int) -> RecurrentAttentionModel:
    torch.manual_seed(seed)
    env = GlimpseVectorEnv(1, **TINY_GLIMPSES)
    shape = env.single_observation_space["glimpse"].shape
    return RecurrentAttentionModel(shape, 4, RAMConfig(location_policy="random", **SMALL))


def test_random_policy_draws_uniform_locations_from_the_generator_alone():
    env = GlimpseVectorEnv(256, **TINY_GLIMPSES)
    a = rollout(_random_agent(0), EpisodeRunner(env, seed=1), generator=torch.Generator().manual_seed(5))
    b = rollout(_random_agent(1), EpisodeRunner(env, seed=1), generator=torch.Generator().manual_seed(5))
    # Different weights, same generator: the same locations (they do not depend on the agent) ...
    assert torch.equal(a.locations, b.locations)
    chosen = a.locations[:, 1:]  # (N, T-1, 2); the first location is the environment's
    assert chosen.abs().max() <= 1.0 and chosen.std() > 0.5  # uniform on [-1, 1]: std 0.577
    # ... and mean locations are no different: a uniform distribution has no mode.
    c = rollout(
        _random_agent(0), EpisodeRunner(env, seed=1), deterministic=True, generator=torch.Generator().manual_seed(5)
    )
    assert torch.equal(c.locations, a.locations)


def test_random_policy_trains_by_cross_entropy_only():
    model = _random_agent(0)
    env = GlimpseVectorEnv(32, **TINY_GLIMPSES)
    traj = rollout(model, EpisodeRunner(env, seed=0), generator=torch.Generator().manual_seed(0))
    loss, stats = hybrid_loss(traj)
    loss.backward()
    assert torch.count_nonzero(traj.log_pi) == 0 and float(stats["losses/reinforce"]) == 0.0
    assert all(p.grad is None for p in model.location_net.parameters())  # no REINFORCE
    assert model.glimpse_net.what[1].weight.grad.abs().sum() > 0 and model.action_net.fc.weight.grad is not None


def test_location_policy_flag_reaches_the_agent_and_its_checkpoint():
    config = resolve_config({"location_policy": "random", **SMALL})
    assert config.ram_config().location_policy == "random"
    model = _random_agent(0)
    assert RecurrentAttentionModel.from_args(model.model_args()).config.location_policy == "random"
    with pytest.raises(ValueError, match="location_policy"):
        RAMConfig(location_policy="greedy")
    old = model.model_args()
    del old["config"]["location_policy"]  # a checkpoint from before the flag: the learned policy
    assert RecurrentAttentionModel.from_args(old).config.location_policy == "learned"
