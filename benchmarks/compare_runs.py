"""Two training runs' validation curves, epoch by epoch: where the second is lower, by how much, and where each ends.

python benchmarks/compare_runs.py checkpoints/cluttered60-8g-gpu.pt runs/c60-8g-lstm \
    --json results/compare_runs/cluttered60-8g-lstm-gpu.json

Each side is a run directory (its ``history.jsonl``), a ``history.jsonl`` file or a checkpoint (the history it holds,
which for a ``best.pt`` or a shipped checkpoint ends at the kept epoch). Compared: the validation error with mean
locations (``--metric`` for another) at every epoch both have. Reported: how many of those epochs the second run is
lower (ties count for neither), the mean and median of ``first - second`` in points, both curves at a few epochs, each
run's best epoch and the range and mean of its last ``--tail`` epochs. Whether the two runs are comparable (same
seed, same validation split) is the caller's business; the report names both sources.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from agents.checkpoint import load_checkpoint

METRIC = "val_error_mean_location"
MILESTONES = (15, 50, 75, 100, 150, 200, 250, 300, 400, 600)


def load_history(source: str | Path) -> list[dict[str, Any]]:
    """The per-epoch records of a run directory, a ``history.jsonl`` or a checkpoint, in file order."""
    path = Path(source)
    if path.is_dir():
        path = path / "history.jsonl"
        if not path.is_file():
            raise SystemExit(f"{source} has no history.jsonl: give a run directory made by train_agent.py")
    if not path.is_file():
        raise SystemExit(f"{source} does not exist: give a run directory, a history.jsonl or a checkpoint")
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    history = load_checkpoint(path).get("history")
    if not history:
        raise SystemExit(f"{source} holds no training history (an SB3 checkpoint?): give its run directory instead")
    return list(history)


def by_epoch(history: list[dict[str, Any]], metric: str) -> dict[int, float]:
    """``{epoch: value}`` of the records that carry ``metric``; a resumed run's repeated epoch keeps its last record."""
    return {int(r["epoch"]): float(r[metric]) for r in history if r.get(metric) is not None and "epoch" in r}


def compare(first: dict[int, float], second: dict[int, float], *, tail: int = 40) -> dict[str, Any]:
    """How the ``second`` curve compares with the ``first`` (both ``{epoch: error}``) over the epochs both have."""
    shared = sorted(set(first) & set(second))
    if not shared:
        raise SystemExit("the two runs share no epoch: nothing to compare")
    gaps = [first[e] - second[e] for e in shared]

    def ends(curve: dict[int, float]) -> dict[str, Any]:
        epochs = sorted(curve)
        last = [curve[e] for e in epochs[-tail:]]
        best_epoch = min(epochs, key=lambda e: (curve[e], e))
        return {
            "epochs": len(epochs),
            "last_epoch": epochs[-1],
            "best_epoch": best_epoch,
            "best": curve[best_epoch],
            f"last_{len(last)}_min": min(last),
            f"last_{len(last)}_max": max(last),
            f"last_{len(last)}_mean": statistics.fmean(last),
        }

    return {
        "shared_epochs": len(shared),
        "second_lower_at": sum(g > 0 for g in gaps),
        "first_lower_at": sum(g < 0 for g in gaps),
        "mean_gap_points": statistics.fmean(gaps),
        "median_gap_points": statistics.median(gaps),
        "at_epoch": {e: {"first": first[e], "second": second[e]} for e in MILESTONES if e in first and e in second},
        "shared": [[e, first[e], second[e]] for e in shared],  # every shared epoch: [epoch, first, second]
        "first": ends(first),
        "second": ends(second),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("first", help="the reference run: run directory, history.jsonl or checkpoint")
    parser.add_argument("second", help="the run compared with it")
    parser.add_argument("--metric", default=METRIC, help=f"history field to compare (default {METRIC})")
    parser.add_argument("--tail", type=int, default=40, help="how many final epochs to summarise per run")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    first, second = (by_epoch(load_history(s), args.metric) for s in (args.first, args.second))
    for name, curve in (("first", first), ("second", second)):
        if not curve:
            raise SystemExit(f"the {name} run's history has no {args.metric!r}: pick one with --metric")
    report = {"first_source": args.first, "second_source": args.second, "metric": args.metric}
    report.update(compare(first, second, tail=args.tail))
    # One line per shared epoch, so that the raw curves stay readable without bloating the file.
    rows = ",\n    ".join(json.dumps(row) for row in report.pop("shared"))
    text = json.dumps(report, indent=2)[:-2] + f',\n  "shared": [\n    {rows}\n  ]\n}}'
    json.loads(text)  # still valid JSON
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
