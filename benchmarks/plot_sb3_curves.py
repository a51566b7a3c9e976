"""One figure and one table of several ``bench_sb3.py`` result files (each algorithm's shipped setting).

    python benchmarks/plot_sb3_curves.py results/sb3_2m_ppo_grid5_lin_bench.json results/sb3_2m_a2c_grid3_bench.json \
        --out results/sb3_2m_all_curves.png --table results/sb3_2m_all_table.md

``bench_sb3.py`` draws one figure per invocation; the algorithms' realistic-budget runs were made in several
invocations (one file each). This draws every run of the given files in one figure, one colour per algorithm and one
line style per seed, labelled with the file's hyperparameter overrides, and prints each run's final test error.
``--table`` also writes a Markdown table with one line per algorithm and setting: its seeds, their test errors
(mean locations) and the mean over seeds of the three errors, beside the target the benchmark sets for it;
``--readme README.md`` puts the same table between the README's ``<!-- sb3-table:start -->`` and
``<!-- sb3-table:end -->``.
"""

from __future__ import annotations

import argparse
import json
import statistics
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


#: Test error targets (%, mean locations, MNIST with 6 glimpses, within 2 million environment steps) the benchmark
#: sets for the on-policy algorithms; the off-policy ones report what they reach in PPO's wall time.
TARGETS = {"ppo": 10.0, "a2c": 10.0, "recurrentppo": 10.0, "auxppo": 2.0}
START, END = "<!-- sb3-table:start -->", "<!-- sb3-table:end -->"


def summary_table(rows: list[dict]) -> str:
    """A Markdown table, one line per algorithm and setting (env id, ``--hyperparams`` and ``--env-args`` overrides)
    over its seeds: environment steps, training time, each seed's test error with mean locations, and the means (the
    targets apply to RAM/MNIST-v0 only)."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        key = (row["algo"], row.get("env", ""), row.get("hyperparams") or "", row.get("env_args") or "")
        groups.setdefault(key, []).append(row)
    lines = [
        "| algo | overrides | seeds | env steps | train time (s) | mean location, per seed | sampled | mean location "
        "| Monte Carlo | sd (mean location) | target |",
        "| --- | --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for (algo, env, hyperparams, env_args), group in groups.items():
        group = sorted(group, key=lambda r: r["seed"])
        overrides = ", ".join(f"`{o}`" for o in (hyperparams, env_args) if o) or "none"
        steps = sorted({r["env_steps"] for r in group})
        times = sorted({round(r["train_seconds"]) for r in group})
        time_range = f"{times[0]:,}" if len(times) == 1 else f"{times[0]:,}-{times[-1]:,}"
        errors = [r["error_mean_location"] for r in group]
        sd = f"{statistics.stdev(errors):.2f}" if len(errors) > 1 else "-"
        target = f"<= {TARGETS[algo]:.0f}" if algo in TARGETS and env == "RAM/MNIST-v0" else "report"
        lines.append(
            f"| `{algo}` | {overrides} | {', '.join(str(r['seed']) for r in group)} "
            f"| {' / '.join(f'{s:,}' for s in steps)} | {time_range} "
            f"| {' / '.join(f'{e:.2f}' for e in errors)} "
            f"| {statistics.mean(r['error_sampled'] for r in group):.2f} | **{statistics.mean(errors):.2f}** "
            f"| {statistics.mean(r['error_monte_carlo'] for r in group):.2f} | {sd} | {target} |"
        )
    return "\n".join(lines) + "\n"


def with_table(readme: str, table: str) -> str:
    """``readme`` with everything between the SB3 table markers replaced by ``table``."""
    start, end = readme.find(START), readme.find(END)
    if start < 0 or end < start:
        raise SystemExit(f"the README lacks the markers {START} ... {END}")
    return readme[: start + len(START)] + "\n" + table + readme[end:]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path, help="<name>_bench.json files written by bench_sb3.py")
    parser.add_argument("--out", type=Path, required=True, help="the PNG to write")
    parser.add_argument("--table", type=Path, help="also write the Markdown summary table here")
    parser.add_argument("--readme", type=Path, help="also put the table into this README, between the markers")
    parser.add_argument("--title", default="RAM/MNIST-v0, 6 glimpses")
    args = parser.parse_args(argv)
    rows = labelled_rows(args.files)
    plot_sb3_curves(rows, args.out, title=args.title)
    for row in rows:
        print(f"{row['label']}: {row['env_steps']:,} steps, test error {row['error_mean_location']:.2f} % (mean loc.)")
    print(f"wrote {args.out}")
    table = summary_table(rows) if args.table or args.readme else ""
    if args.table:
        args.table.write_text(table)
        print(f"wrote {args.table}")
    if args.readme:
        args.readme.write_text(with_table(args.readme.read_text(), table))
        print(f"updated {args.readme}")


if __name__ == "__main__":
    main()
