"""benchmarks/compare_runs.py: the epoch-by-epoch comparison on curves whose answer is known."""

from __future__ import annotations

import json

import pytest

from benchmarks.compare_runs import by_epoch, compare, load_history, main


def test_counts_where_the_second_run_is_lower_and_by_how_much():
    first = {1: 50.0, 2: 30.0, 3: 20.0, 4: 10.0, 5: 9.0}
    second = {1: 40.0, 2: 30.0, 3: 25.0, 4: 8.0}  # lower at 1 and 4, tied at 2, higher at 3; epoch 5 not shared
    report = compare(first, second, tail=2)
    assert report["shared_epochs"] == 4
    assert report["second_lower_at"] == 2 and report["first_lower_at"] == 1
    assert report["mean_gap_points"] == pytest.approx((10.0 + 0.0 - 5.0 + 2.0) / 4)
    assert report["median_gap_points"] == pytest.approx(1.0)
    assert report["first"]["best_epoch"] == 5 and report["first"]["best"] == 9.0  # its own curve, not just shared
    assert report["second"]["last_epoch"] == 4
    assert report["second"]["last_2_min"] == 8.0 and report["second"]["last_2_max"] == 25.0


def test_reads_a_run_directory_and_keeps_the_last_record_of_a_repeated_epoch(tmp_path):
    """A resumed run can write an epoch twice; the record written last is the one the run continued from."""
    records = [
        {"epoch": 1, "val_error_mean_location": 60.0},
        {"epoch": 2, "val_error_mean_location": 50.0},
        {"step": 3, "train_loss": 1.0},  # a record without the metric is skipped
        {"epoch": 2, "val_error_mean_location": 45.0},
    ]
    run = tmp_path / "run"
    run.mkdir()
    (run / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert by_epoch(load_history(run), "val_error_mean_location") == {1: 60.0, 2: 45.0}


def test_command_line_writes_the_report_and_rejects_a_folder_without_history(tmp_path):
    for name, values in (("a", [9.0, 7.0]), ("b", [8.0, 7.5])):
        (tmp_path / name).mkdir()
        lines = [json.dumps({"epoch": e + 1, "val_error_mean_location": v}) for e, v in enumerate(values)]
        (tmp_path / name / "history.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "report.json"
    main([str(tmp_path / "a"), str(tmp_path / "b"), "--json", str(out)])
    report = json.loads(out.read_text())
    assert report["second_lower_at"] == 1 and report["first_lower_at"] == 1
    assert report["first_source"] == str(tmp_path / "a")
    assert report["shared"] == [[1, 9.0, 8.0], [2, 7.0, 7.5]]  # the raw curves, epoch by epoch
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="no history.jsonl"):
        main([str(tmp_path / "a"), str(tmp_path / "empty")])
