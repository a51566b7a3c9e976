"""Run management (agents.runs): resume restores the whole configuration, a run stopped early still validates and
writes strict JSON, library code installs no signal handlers, one live writer per run directory."""

from __future__ import annotations

import dataclasses
import json
import signal
from pathlib import Path

import pytest

import train_agent
from agents.checkpoint import load_checkpoint, save_checkpoint
from agents.config import PRESETS, TrainConfig, UserError, resolve_config
from agents.runs import RunLock, StopFlag, config_from_command_line, finite, write_json
from agents.trainer import RAMTrainer, train

TINY = "dataset=tiny,glimpse_size=4,num_scales=2,canvas_size=24"


def _strict_json(path: Path):
    def refuse(constant: str):
        raise ValueError(f"{path} holds {constant}, which strict JSON readers reject")

    return json.loads(path.read_text(), parse_constant=refuse)


def _fake_run(path: Path, config: TrainConfig) -> Path:
    """A checkpoint holding ``config`` (what ``--resume`` reads before anything else)."""
    path.mkdir(parents=True)
    payload = {"algo": config.algo, "env_id": config.env, "env_kwargs": {}, "config": dataclasses.asdict(config)}
    payload.update(epoch=4, global_step=1564)
    save_checkpoint(payload, path / "last.pt")
    return path / "last.pt"


# ------------------------------------------------------------------------------------------------ resume


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_resume_restores_every_field_the_preset_set(preset, tmp_path, capsys):
    saved = resolve_config({"preset": preset, "seed": 7, "learning_rate": 5e-4})
    checkpoint = _fake_run(tmp_path / "run", saved)
    resumed = config_from_command_line(["--resume", str(checkpoint)])
    assert resumed == dataclasses.replace(saved, resume=str(checkpoint))
    err = capsys.readouterr().err
    assert f"resuming {checkpoint} (epoch 4, update 1564)" in err and "from the command line" not in err


def test_resume_applies_only_the_flags_given_and_says_so(tmp_path, capsys):
    saved = resolve_config({"preset": "mnist-6g"})
    checkpoint = _fake_run(tmp_path / "run", saved)
    resumed = config_from_command_line(["--resume", str(checkpoint), "--epochs", "300", "--time-limit", "5"])
    assert resumed == dataclasses.replace(saved, resume=str(checkpoint), epochs=300, time_limit=5.0)
    err = capsys.readouterr().err
    assert "epochs = 300 (the run had 200)" in err and "time_limit" not in err  # a setting of this invocation


def test_resuming_a_control_model_says_it_is_not_a_train_agent_run(tmp_path):
    """Before, a control checkpoint (benchmarks/train_controls.py) was refused as 'a configuration this version
    cannot read', which sent users looking for a version mismatch."""
    from agents.controls import ControlConfig

    path = tmp_path / "mnist-conv.pt"
    config = dataclasses.asdict(ControlConfig(model="conv"))
    save_checkpoint({"algo": "conv", "env_id": "RAM/MNIST-v0", "env_kwargs": {}, "config": config}, path)
    with pytest.raises(UserError, match="is a conv control model .* train a new one with benchmarks/train_controls"):
        config_from_command_line(["--resume", str(path)])


@pytest.mark.parametrize("flag", [["--core", "lstm"], ["--glimpses", "4"], ["--preset", "mnist-4g"]])
def test_resume_refuses_flags_that_change_the_task_or_the_model(flag, tmp_path):
    checkpoint = _fake_run(tmp_path / "run", resolve_config({"preset": "mnist-6g"}))
    with pytest.raises(UserError, match=f"{flag[0]} .*conflicts with the resumed run"):
        config_from_command_line(["--resume", str(checkpoint), *flag])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--algo", "ppo", "--epochs", "5"], "--epochs: only for the RAM agent (--algo ram), not --algo ppo"),
        (["--algo", "sac", "--batch-size", "64", "--location-std", "0.2"], "--batch-size, --location-std: only for"),
        (["--total-timesteps", "1000"], "--total-timesteps: only for stable-baselines3 algorithms"),
        (["--algo", "ram", "--n-envs", "8", "--hyperparams", "n_epochs=3"], "--n-envs, --hyperparams: only for"),
    ],
)
def test_a_flag_the_algorithm_would_ignore_is_refused(argv, message, tmp_path, capsys):
    """Before, ``--algo ppo --epochs 5`` trained PPO for its file's budget without a word."""
    run = tmp_path / "run"
    # Short runs on the tiny task, so that a lost refusal fails quickly (by training) instead of hanging.
    short = ["--device", "cpu", "--time-limit", "0.0001", "--env-args", TINY]
    assert train_agent.main([*argv, *short, "--output", str(run)]) == 2
    assert message in capsys.readouterr().err and not run.exists()


def test_a_preset_is_refused_with_an_sb3_algorithm_and_resume_refuses_ram_flags(tmp_path):
    # A *-gpu preset's learning rate (0.00283) replaced PPO's decaying lin_2e-3 without a word.
    with pytest.raises(UserError, match="--preset: only for the RAM agent .*--env and --glimpses name the task"):
        config_from_command_line(["--preset", "mnist-6g-gpu", "--algo", "ppo"])
    sb3_run = _fake_run(tmp_path / "run", resolve_config({"algo": "ppo"}))  # its RAM defaults: not typed
    assert config_from_command_line(["--resume", str(sb3_run)]).algo == "ppo"
    with pytest.raises(UserError, match="--epochs: only for the RAM agent"):
        config_from_command_line(["--resume", str(sb3_run), "--epochs", "3"])


def test_cli_resume_keeps_the_runs_epochs_and_config_json(tmp_path):
    run = tmp_path / "run"
    common = ["--env-args", TINY, "--device", "cpu", "--batch-size", "16", "--hidden-size", "32"]
    assert train_agent.main([*common, "--epochs", "3", "--time-limit", "0.0001", "--output", str(run)]) == 0
    # Stopped by the time limit (0.36 s) before the end of its 3 epochs of 16 updates: usually after the first
    # update, after two when the machine is quiet (the old "== 1" failed about one CI run in three).
    assert 1 <= load_checkpoint(run / "last.pt")["global_step"] < 3 * 16
    assert _strict_json(run / "summary.json")["stopped"] == "time limit"
    assert train_agent.main(["--resume", str(run)]) == 0  # no --epochs: the run's 3, not the default
    assert json.loads((run / "config.json").read_text())["epochs"] == 3
    assert _strict_json(run / "summary.json")["epochs"] == 3


def _snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def test_resuming_a_finished_run_changes_nothing_and_a_larger_budget_trains_on(tmp_path, tiny_run_config, capsys):
    """Before, ``--resume`` of a finished run rewrote its config.json, history, summary and last.pt without a word."""
    run = tmp_path / "run"
    first = train(tiny_run_config(run, epochs=1), progress=False)
    before = _snapshot(run)
    assert train_agent.main(["--resume", str(run)]) == 0
    assert "has already trained its whole budget (--epochs 1): nothing to train" in capsys.readouterr().err
    assert _snapshot(run) == before
    assert train_agent.main(["--resume", str(run), "--epochs", "2"]) == 0
    assert load_checkpoint(run / "last.pt")["epoch"] == 2 > first["epochs"]


def test_a_shipped_copy_or_an_older_checkpoint_is_refused_before_anything_is_written(tmp_path, tiny_run_config):
    from agents.manifest import ship_checkpoint

    run = tmp_path / "run"
    train(tiny_run_config(run, epochs=1), progress=False)
    shipped = tmp_path / "shipped" / "agent.pt"
    ship_checkpoint(run / "last.pt", shipped)
    with pytest.raises(UserError, match="without the optimizer state .* cannot be resumed"):
        train(tiny_run_config(run, resume=str(shipped), epochs=3), progress=False)
    assert sorted(p.name for p in shipped.parent.iterdir()) == ["agent.pt"]  # it once wrote history.jsonl here
    # A best.pt older than its run's last.pt: training on from it would overwrite the newer files.
    state = load_checkpoint(run / "last.pt")
    save_checkpoint({**state, "global_step": state["global_step"] - 1, "epoch": 0}, run / "best.pt")
    before = _snapshot(run)
    with pytest.raises(UserError, match=f"best.pt is at update .* but {run / 'last.pt'} .* is at update"):
        train(tiny_run_config(run, resume=str(run / "best.pt"), epochs=3), progress=False)
    assert _snapshot(run) == before


# ------------------------------------------------------------------------------------------------ early stops


def test_run_stopped_before_its_first_validation_validates_and_writes_strict_json(tmp_path, tiny_run_config):
    summary = train(tiny_run_config(tmp_path / "run", epochs=2, time_limit=1e-6), progress=False)
    run = tmp_path / "run"
    assert summary["stopped"] == "time limit" and summary["steps"] == 1
    best = load_checkpoint(run / "best.pt")
    assert best["global_step"] == 1 and best["history"][-1]["stopped"] == "time limit"
    assert _strict_json(run / "summary.json")["best_val_error_mean_location"] == best["best_val"]
    assert [r["step"] for r in map(json.loads, (run / "history.jsonl").read_text().splitlines())] == [1]


def test_stop_request_checkpoints_validates_and_raises(tmp_path, tiny_run_config):
    from agents.config import TrainingInterrupted

    stop = StopFlag()
    stop.requested = True
    with pytest.raises(TrainingInterrupted, match="--resume"):
        train(tiny_run_config(tmp_path / "run", epochs=2), progress=False, stop=stop)
    assert load_checkpoint(tmp_path / "run" / "best.pt")["global_step"] == 1
    assert _strict_json(tmp_path / "run" / "summary.json")["stopped"] == "interrupted"


def test_write_json_turns_non_finite_numbers_into_null(tmp_path):
    write_json(tmp_path / "x.json", {"a": float("inf"), "b": [1.5, float("nan")], "c": (2, -float("inf"))})
    assert _strict_json(tmp_path / "x.json") == {"a": None, "b": [1.5, None], "c": [2, None]}
    assert finite(0.25) == 0.25


# ------------------------------------------------------------------------------------------------ signals, lock


class _SignalProbe(StopFlag):
    """Records the SIGINT handler in force each time the trainer asks whether to stop."""

    def __init__(self) -> None:
        self.handlers: list[object] = []

    @property
    def requested(self) -> bool:  # type: ignore[override]
        self.handlers.append(signal.getsignal(signal.SIGINT))
        return False


def test_library_training_installs_no_signal_handlers(tmp_path, tiny_run_config):
    before = signal.getsignal(signal.SIGINT)
    probe = _SignalProbe()
    train(tiny_run_config(tmp_path / "run", epochs=1), progress=False, stop=probe)
    assert probe.handlers and all(handler is before for handler in probe.handlers)


def test_a_second_live_writer_of_a_run_directory_is_refused(tmp_path, tiny_run_config, capsys):
    run = tmp_path / "run"
    train(tiny_run_config(run, epochs=1), progress=False)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    with RunLock(run):  # a live run holds the directory
        with pytest.raises(UserError, match="being written by a live run"):
            RunLock(run).acquire()
        flags = ["--env-args", TINY, "--device", "cpu", "--batch-size", "16", "--epochs", "1", "--output", str(run)]
        assert train_agent.main([*flags, "--overwrite"]) == 2
        assert "being written by a live run" in capsys.readouterr().err
        assert train_agent.main(["--resume", str(run), "--epochs", "2"]) == 2  # something to train: refused
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before  # nothing touched
    RAMTrainer(tiny_run_config(run, epochs=1, overwrite=True), progress=False).run()  # free again once released
