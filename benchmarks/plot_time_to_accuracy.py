"""Draw time-to-accuracy curves from the JSON files of ``benchmarks/time_to_accuracy.py`` (no training).

    python benchmarks/plot_time_to_accuracy.py results/time_to_accuracy_mnist_b128_cuda.json \
        results/time_to_accuracy_mnist_b1024_cuda.json --out results/time_to_accuracy_mnist_cuda.png

For curves measured on another machine (the GPU session brings back the JSON files only) or overlaid later.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from agents.figures import plot_time_to_accuracy


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("curves", nargs="+", type=Path, help="time_to_accuracy.py JSON files")
    parser.add_argument("--labels", nargs="*", help="one legend label per file (default: each file's own label)")
    parser.add_argument("--title", default="", help="figure title (default: the first file's hardware)")
    parser.add_argument("--out", type=Path, required=True, help="the PNG to write")
    args = parser.parse_args(argv)
    runs = [json.loads(path.read_text()) for path in args.curves]
    labels = args.labels or [run["label"] for run in runs]
    if len(labels) != len(runs):
        parser.error(f"--labels gives {len(labels)} labels for {len(runs)} files")
    if len(set(labels)) != len(labels):
        parser.error(f"two curves share a label ({labels}); name them with --labels")
    curves = {label: run["points"] for label, run in zip(labels, runs, strict=True)}
    out = plot_time_to_accuracy(curves, args.out, title=args.title or runs[0]["hardware"])
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main()
