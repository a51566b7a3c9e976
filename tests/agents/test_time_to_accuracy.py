"""Time to accuracy (agents/time_to_accuracy.py, benchmarks/time_to_accuracy.py): a real curve from the trainer."""

from __future__ import annotations

import json

import pytest

from agents.config import UserError
from agents.time_to_accuracy import curve_points, main, time_to_accuracy
from tests.conftest import TINY_ENV_ARGS


def _strict(text: str):
    def refuse(name: str):
        raise ValueError(f"non-finite JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def test_time_to_accuracy_writes_a_rising_time_curve(tmp_path):
    out = tmp_path / "curve.json"
    argv = [
        "--env-args", TINY_ENV_ARGS, "--device", "cpu", "--seed", "3", "--batch-size", "16", "--hidden-size", "32",
        "--glimpse-hidden", "16", "--glimpse-out", "32", "--epoch-images", "160",
        "--seconds", "4", "--validate-every-seconds", "0.5", "--warmup-updates", "5", "--json", str(out),
    ]  # fmt: skip
    result = main(argv)
    saved = _strict(out.read_text())
    assert saved == json.loads(json.dumps(result))
    assert (tmp_path / "curve.png").stat().st_size > 1000
    points = saved["points"]
    assert len(points) >= 3  # interval validations every 0.5 s of a 4 s budget, plus the epochs' ends
    times = [p["train_seconds"] for p in points]
    assert all(b > a for a, b in zip(times, times[1:], strict=False)) and times[0] > 0
    assert times[-1] <= 4 + 1  # the budget is wall time; the last update and validation may overrun a little
    steps = [p["step"] for p in points]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)
    for p in points:
        assert 0 <= p["val_error_mean_location"] <= 100 and 0 <= p["val_error_sampled"] <= 100
    assert saved["config"]["batch_size"] == 16 and saved["config"]["warmup_updates"] == 5
    assert saved["summary"]["stopped"] == "time limit"
    assert saved["label"] == "batch 16, lr 0.001, warmup 5"
    assert saved["hardware"] and saved["date"] and len(saved["load_average"]["start"]) == 3
    # A second curve drawn beside the first.
    second = tmp_path / "second.json"
    main([*argv[:-2], "--json", str(second), "--plot-with", str(out), "--label", "again"])
    assert _strict(second.read_text())["label"] == "again" and (tmp_path / "second.png").exists()


def test_curve_points_exclude_earlier_validation_time():
    history = [
        {"train_time": 5.0, "validation_time": 1.5, "step": 3, "images": 48, "epoch": 0},
        {"train_time": 9.5, "validation_time": 0.5, "step": 7, "images": 112, "epoch": 1},
        {"train_time": 12.0, "validation_time": 1.0, "step": 9, "images": 144, "epoch": 1},
    ]
    for r in history:
        r.update(val_error_mean_location=10.0, val_error_sampled=12.0)
    assert [p["train_seconds"] for p in curve_points(history)] == [5.0, 8.0, 10.0]


def test_time_to_accuracy_refuses_other_algorithms(tiny_run_config, tmp_path):
    with pytest.raises(UserError, match="algo ram"):
        time_to_accuracy(tiny_run_config(tmp_path / "run", algo="ppo"), seconds=1)


def test_plot_time_to_accuracy_draws_saved_curves_and_refuses_clashing_labels(tmp_path, capsys):
    from benchmarks import plot_time_to_accuracy

    points = [{"train_seconds": s, "val_error_mean_location": e} for s, e in ((1.0, 40.0), (2.0, 20.0), (3.0, 9.0))]
    files = []
    for name in ("a", "b"):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"label": "batch 1024, lr 0.00283", "hardware": "GPU X", "points": points}))
        files.append(str(path))
    out = tmp_path / "both.png"
    with pytest.raises(SystemExit):  # the two files carry the same label: one curve would hide the other
        plot_time_to_accuracy.main([*files, "--out", str(out)])
    assert "share a label" in capsys.readouterr().err and not out.exists()
    with pytest.raises(SystemExit):
        plot_time_to_accuracy.main([*files, "--labels", "only one", "--out", str(out)])
    assert plot_time_to_accuracy.main([*files, "--labels", "60 s", "to the end", "--out", str(out)]) == out
    assert out.stat().st_size > 1000
