"""Training (agents/trainer.py): the learning-rate schedule the optimizer really follows."""

from __future__ import annotations

import json

import pytest

from agents.checkpoint import load_checkpoint
from agents.config import TrainConfig, resolve_config
from agents.trainer import lr_factor, train
from ram_env.task import Task, TaskConfig


def test_lr_factor_decays_once_every_lr_decay_steps_updates():
    config = TrainConfig()  # the seed implementation's x0.97 every 1000 updates
    steps = [0, 999, 1000, 1001, 1999, 2000]
    assert [lr_factor(s, config) for s in steps] == pytest.approx([1, 1, 0.97, 0.97, 0.97, 0.97**2], abs=1e-12)


def test_trainer_learning_rate_after_k_updates(tmp_path):
    config = resolve_config(
        dict(
            env_args="dataset=tiny,glimpse_size=4,num_scales=2",
            output=str(tmp_path / "run"),
            device="cpu",
            epochs=1,
            batch_size=8,
            epoch_images=5 * 8,  # 5 updates
            learning_rate=1e-3,
            lr_decay=0.5,
            lr_decay_steps=2,
            hidden_size=16,
            glimpse_hidden=8,
            glimpse_out=16,
        )
    )
    train(config, progress=False)
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["global_step"] == 5
    # Updates 0, 1 ran at 1e-3, updates 2, 3 at 5e-4, update 4 at 2.5e-4; the next one will run at 2.5e-4 too.
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-3 * 0.5**2, rel=1e-12)


def test_cifar10_preset_trains_and_evaluates_on_generated_batches(tmp_path, cifar_dir):
    """No CIFAR-10 files are available to the test suite: the preset (LSTM core, convolutional glimpse network,
    3 colour channels) runs end to end on the suite's fake batches in the official pickle format (random pixels)."""
    import evaluate
    import train_agent

    run = tmp_path / "run"
    flags = ["--preset", "cifar10-4g", "--env-args", f"data_dir={cifar_dir},download=false", "--device", "cpu"]
    assert train_agent.main([*flags, "--epochs", "2", "--batch-size", "16", "--output", str(run)]) == 0
    state = load_checkpoint(run / "best.pt")
    assert state["config"]["core"] == "lstm" and state["config"]["conv_glimpse"]
    assert state["model_args"]["glimpse_shape"][:2] == [3, 3]  # 3 scales of 3 colour channels
    assert state["global_step"] > 0 and len(state["history"]) >= 1
    report = tmp_path / "report.json"
    assert evaluate.main([str(run), "--mc-samples", "2", "--json", str(report), "--device", "cpu"]) == 0
    assert json.loads(report.read_text())["episodes"] == len(
        Task(TaskConfig(dataset="cifar10", data_dir=str(cifar_dir), download=False, split="test")).data
    )
