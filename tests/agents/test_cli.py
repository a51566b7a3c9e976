"""The command lines as a newcomer meets them: thread count, help texts, program names, what evaluate.py scores."""

from __future__ import annotations

import json
import re
import sys
import warnings
from pathlib import Path

import pytest
import torch

import agents.trainer
import evaluate
import train_agent
from agents.checkpoint import resolve_checkpoint_path
from agents.config import (
    ALGO_NAMES,
    PRESETS,
    TrainConfig,
    TrainingInterrupted,
    UserError,
    build_parser,
    resolve_config,
)
from agents.threads import auto_threads, parse_threads, set_threads
from agents.trainer import train

TINY = "dataset=tiny,glimpse_size=4,num_scales=2,canvas_size=24"
SMALL = {"hidden_size": 32, "glimpse_hidden": 16, "glimpse_out": 32, "batch_size": 64, "device": "cpu", "seed": 3}


@pytest.fixture
def keep_threads(monkeypatch):
    """Restore torch's thread count and OMP_NUM_THREADS after the test."""
    threads = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------------------ threads


def test_parse_threads():
    assert parse_threads("auto") is None and parse_threads(None) is None and parse_threads(" AUTO ") is None
    assert parse_threads("3") == 3 and parse_threads(2) == 2
    for bad in ("0", "-1", "two", "1.5"):
        with pytest.raises(ValueError, match="positive integer"):
            parse_threads(bad)


def test_auto_is_one_thread_unless_omp_num_threads_says_otherwise(keep_threads, monkeypatch):
    assert auto_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert auto_threads() == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "lots")
    with pytest.warns(UserWarning, match="OMP_NUM_THREADS"):
        assert auto_threads() == 1


def test_set_threads_sets_torch_and_children_inherit_it(keep_threads, monkeypatch):
    torch.set_num_threads(2)
    assert set_threads("auto") == 1 and torch.get_num_threads() == 1
    assert sys.modules["os"].environ["OMP_NUM_THREADS"] == "1"  # child processes get the same choice
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert set_threads(None) == 2 and torch.get_num_threads() == 2
    assert set_threads(1) == 1  # an explicit count wins over OMP_NUM_THREADS
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        set_threads(1)  # setting it again (inter-op pool already fixed) is quiet


def test_train_agent_sets_the_thread_count_before_training(keep_threads, monkeypatch):
    seen = []
    monkeypatch.setattr(
        agents.trainer, "train", lambda config, **kwargs: seen.append((config, torch.get_num_threads())) or {}
    )
    torch.set_num_threads(2)
    assert train_agent.main(["--device", "cpu"]) == 0  # default: auto -> 1 (OMP_NUM_THREADS unset)
    assert seen[-1][0].threads == "auto" and seen[-1][1] == 1
    torch.set_num_threads(2)
    assert train_agent.main(["--device", "cpu", "--threads", "1"]) == 0
    assert seen[-1][1] == 1
    assert TrainConfig().threads == "auto"


@pytest.mark.parametrize("main", [train_agent.main, evaluate.main])
def test_bad_thread_count_fails_cleanly(main, capsys, tmp_path):
    argv = ["--threads", "0"] if main is train_agent.main else [str(tmp_path), "--threads", "0"]
    assert main(argv) == 2
    assert "--threads must be 'auto' or a positive integer" in capsys.readouterr().err


def test_bad_thread_count_is_a_user_error():
    with pytest.raises(UserError, match="--threads"):
        resolve_config({"threads": "many"})


# --------------------------------------------------------------------------------------------------------- help


def _help(parser) -> str:
    return parser.format_help()


def test_help_prints_each_default_once_and_lists_the_algorithms():
    text = _help(build_parser("train_agent.py"))
    options = re.split(r"\n  (?=-)", text.split("options:", 1)[1])
    for option in options:
        assert option.count("default") <= 1, option
    assert "(default: None)" not in text
    algo = next(o for o in options if o.startswith("--algo"))
    flat = " ".join(algo.split())
    assert all(name in flat for name in ALGO_NAMES[1:])
    assert "RAM_DATA_DIR" in text and "--threads" in text


def test_algo_names_match_the_sb3_table():
    from agents.sb3 import ALGORITHMS

    assert ALGO_NAMES[0] == "ram" and set(ALGO_NAMES[1:]) == set(ALGORITHMS)


def test_evaluate_help_explains_every_flag():
    parser = evaluate.build_parser("evaluate.py")
    for action in parser._actions:
        assert action.help, f"no help for {action.option_strings or action.dest}"
    text = _help(parser)
    assert "RAM_DATA_DIR" in text and "best.pt" in text


@pytest.mark.parametrize(("module", "script"), [(train_agent, "ram-train"), (evaluate, "ram-evaluate")])
def test_usage_names_the_program_it_was_started_as(module, script, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [f"/venv/bin/{script}", "--help"])
    with pytest.raises(SystemExit):
        module.main(["--help"])
    assert capsys.readouterr().out.startswith(f"usage: {script} ")


# --------------------------------------------------------------------------------------------------- evaluate.py


def test_resume_takes_last_pt_and_evaluation_best_pt(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pt").write_bytes(b"x")
    assert resolve_checkpoint_path(run) == run / "last.pt"
    assert resolve_checkpoint_path(run, prefer="best") == run / "last.pt"  # no best.pt yet
    (run / "best.pt").write_bytes(b"x")
    assert resolve_checkpoint_path(run) == run / "last.pt"  # --resume continues the latest state
    assert resolve_checkpoint_path(run, prefer="best") == run / "best.pt"
    (run / "last.pt").unlink()
    assert resolve_checkpoint_path(run, prefer="best") == run / "best.pt"
    with pytest.raises(UserError, match="last.pt"):
        resolve_checkpoint_path(run)


def test_evaluate_run_dir_scores_best_pt_and_names_the_data(tmp_path, capsys):
    summary = train(resolve_config({**SMALL, "env_args": TINY, "epochs": 2, "output": str(tmp_path / "run")}))
    run = Path(summary["run_dir"])
    best_epoch = torch.load(run / "best.pt", weights_only=True)["epoch"]
    out = tmp_path / "eval.json"
    argv = [str(run), "--split", "validation", "--mc-samples", "2", "--json", str(out), "--device", "cpu"]
    assert evaluate.main(argv) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["checkpoint"] == str(run / "best.pt") and report["checkpoint_epoch"] == best_epoch
    assert f"scored {run / 'best.pt'}" in printed
    assert "data set tiny, layout seed 0" in printed and "validation split" in printed
    assert "per_class_error" not in report  # ambiguous: which of the errors?
    for kind in ("mean_location", "monte_carlo"):
        per_class = report[f"per_class_error_{kind}"]
        assert len(per_class) == 4
        # the per-class errors average (images per class are equal in the tiny set) to the overall error
        assert sum(per_class) / 4 == pytest.approx(report[f"error_{kind}"])
    (run / "best.pt").unlink()
    assert evaluate.main(argv) == 0
    assert json.loads(out.read_text())["checkpoint"] == str(run / "last.pt")


def test_resume_hint_says_where_the_data_is(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAM_DATA_DIR", "data")
    monkeypatch.setattr(sys, "argv", ["train_agent.py"])
    said = str(TrainingInterrupted(Path("run/last.pt")))
    assert f"continue with: RAM_DATA_DIR={Path.cwd() / 'data'} python train_agent.py --resume run/last.pt" in said
    monkeypatch.delenv("RAM_DATA_DIR")
    monkeypatch.setattr(sys, "argv", ["/venv/bin/ram-train"])
    said = str(TrainingInterrupted(Path("run/last.pt")))
    assert "continue with: ram-train --resume run/last.pt" in said
    assert "set RAM_DATA_DIR=" in said and "data_dir=" in said


def test_glimpse_figure_has_a_step_legend_and_says_the_locations_are_means(tmp_path):
    import numpy as np

    from agents.evaluation import EvaluationResult
    from agents.figures import glimpse_grid_figure, plot_glimpse_grid
    from ram_env.render import step_colours
    from ram_env.task import Task, TaskConfig

    task = Task(TaskConfig(dataset="tiny", split="validation", glimpses=3, glimpse_size=4, num_scales=2))
    n = len(task.data)
    labels = task.data.labels
    result = EvaluationResult(
        images=n,
        mc_samples=1,
        error_sampled=0.0,
        error_mean_location=0.0,
        error_monte_carlo=0.0,
        labels=labels,
        predictions=labels,
        predictions_mean_location=labels,
        locations=np.zeros((n, 3, 2), np.float32),
    )
    fig = glimpse_grid_figure(result, task, count=4)
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == ["glimpse 1", "glimpse 2", "glimpse 3 (last)", "path"]
    for handle, colour in zip(legend.legend_handles[:3], step_colours(3), strict=True):
        assert np.allclose(handle.get_edgecolor()[:3], colour / 255)
    title = fig._suptitle.get_text()
    assert "mean locations" in title and "not sampled" in title
    assert plot_glimpse_grid(result, task, tmp_path / "g.png").stat().st_size > 0


def test_readme_quick_start_sets_the_data_folder_once_and_speaks_of_this_project():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    quick_start = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = quick_start.split("```bash", 1)[1].split("```", 1)[0]
    assert commands.lstrip().startswith("export RAM_DATA_DIR=")
    assert "RAM_DATA_DIR=" not in commands.split("\n", 2)[-1]  # set once, not per command
    assert "ram-train" in readme and "ram-evaluate" in readme and "--threads" in readme
    for internal in ("REFERENCE", "the issue", "issue's"):
        assert internal not in readme


def _expand_braces(pattern: str) -> list[str]:
    """``"a-{1,2}g"`` -> ``["a-1g", "a-2g"]`` (every brace group, left to right)."""
    head, brace, rest = pattern.partition("{")
    if not brace:
        return [pattern]
    choices, _, tail = rest.partition("}")
    return [head + choice + expanded for choice in choices.split(",") for expanded in _expand_braces(tail)]


def test_readme_names_every_preset():
    """The README's preset list had fallen behind PRESETS (the LSTM presets were missing): a user reading it could not
    know they exist. Each preset must appear in backticks, literally or in a brace pattern (``mnist-{2,4,6,7}g``);
    the ``-gpu`` variants are covered by the README's rule that every preset has one."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    named = {name for token in re.findall(r"`([^`\s]+)`", readme) for name in _expand_braces(token)}
    missing = [name for name in PRESETS if not name.endswith("-gpu") and name not in named]
    assert not missing, f"presets the README does not name: {missing}"
    assert all(f"{name}-gpu" in PRESETS for name in PRESETS if not name.endswith("-gpu"))
