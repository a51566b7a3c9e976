"""Plot validation error against wall time from run directories' history.jsonl.

python benchmarks/plot_curve.py runs/a runs/b --labels "batch 128" "batch 256" --out results/mnist_6g_curve.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from agents.figures import plot_training_curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories holding history.jsonl")
    parser.add_argument("--labels", nargs="*", help="one label per run (default: the directory names)")
    parser.add_argument("--title", default="")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    labels = args.labels or [run.name for run in args.runs]
    histories = {
        label: [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines() if line.strip()]
        for label, run in zip(labels, args.runs, strict=True)
    }
    plot_training_curve(histories, args.out, title=args.title)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
