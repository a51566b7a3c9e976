"""One figure of the validation curves of several ``bench_sb3.py`` result files (each algorithm's shipped setting).

    python benchmarks/plot_sb3_curves.py results/sb3_2m_ppo_grid5_lin_bench.json results/sb3_2m_a2c_grid3_bench.json \
        --out results/sb3_2m_all_curves.png

``bench_sb3.py`` draws one figure per invocation; the algorithms' realistic-budget runs were made in several
invocations (one file each). This draws every run of the given files in one figure, one colour per algorithm and one
line style per seed, labelled with the file's hyperparameter overrides, and prints each run's final test error.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from agents.figures import plot_sb3_curves


def labelled_rows(paths: list[Path]) -> list[dict]:
    """The rows of every file, each with a ``label``: algorithm, seed and the run's ``--hyperparams`` overrides."""
    rows = []
    for path in paths:
        for row in json.loads(path.read_text())["rows"]:
            extra = f", {row['hyperparams']}" if row.get("hyperparams") else ""
            rows.append({**row, "label": f"{row['algo']} (seed {row['seed']}{extra})"})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path, help="<name>_bench.json files written by bench_sb3.py")
    parser.add_argument("--out", type=Path, required=True, help="the PNG to write")
    parser.add_argument("--title", default="RAM/MNIST-v0, 6 glimpses")
    args = parser.parse_args(argv)
    rows = labelled_rows(args.files)
    plot_sb3_curves(rows, args.out, title=args.title)
    for row in rows:
        print(f"{row['label']}: {row['env_steps']:,} steps, test error {row['error_mean_location']:.2f} % (mean loc.)")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
