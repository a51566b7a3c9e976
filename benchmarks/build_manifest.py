"""Add checkpoints to checkpoints/manifest.json (or update their entries), or check the manifest against its files.

    # add or refresh entries (each is evaluated as `evaluate.py FILE --mc-samples 10` does: CPU, one thread)
    python benchmarks/build_manifest.py checkpoints/mnist-fc.pt checkpoints/mnist-conv.pt

    # ship a run's best.pt: copy it without the optimizer state, then add it; name the commit and the hardware
    # it was trained at when the checkpoint does not record them (its "provenance")
    python benchmarks/build_manifest.py checkpoints/mnist-6g.pt --source runs/mnist-6g/best.pt \\
        --trained-at $(git rev-parse HEAD) --hardware "AMD EPYC, 1 torch thread, cpu"

    # re-evaluate every entry (or the files named) and compare with the manifest; exit status 1 on a mismatch
    python benchmarks/build_manifest.py --check

Entries are keyed by file: re-running on a file replaces its entry. Each run also writes the row's figures,
results/paper/<row>/curve.png (validation error against time) and glimpses.png (glimpse paths on test images).
Then `python benchmarks/paper_table.py` rebuilds the README's tables. The logic is in agents/manifest.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agents.cli import run_cli

DEFAULT_MANIFEST = Path("checkpoints/manifest.json")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="build_manifest.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )
    parser.add_argument("checkpoints", nargs="*", type=Path, help="checkpoint files inside the repository")
    parser.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST, help=f"default: {DEFAULT_MANIFEST}")
    parser.add_argument("--source", type=Path, help="first copy this checkpoint (stripped) to the one file given")
    parser.add_argument("--trained-at", help="commit the checkpoints were trained at (if they do not record it)")
    parser.add_argument("--hardware", help="hardware they were trained on (if they do not record it)")
    parser.add_argument("--figures", default="results/paper", help="figures folder, relative to the repository")
    parser.add_argument("--no-figures", action="store_true", help="write no figures")
    parser.add_argument("--check", action="store_true", help="re-evaluate the entries and compare (no writing)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def job() -> None:
        from agents.config import UserError
        from agents.manifest import (
            REPO_ROOT,
            add_entry,
            build_entry,
            check_manifest,
            load_manifest,
            relative_file,
            ship_checkpoint,
        )

        manifest_path = args.manifest if args.manifest.is_absolute() else REPO_ROOT / args.manifest
        manifest = load_manifest(manifest_path)
        if args.check:
            files = [relative_file(p) for p in args.checkpoints] or None
            problems = check_manifest(manifest, files=files)
            for line in problems:
                print(f"MISMATCH {line}")
            checked = len(files) if files else len(manifest["entries"])
            print(f"checked {checked} entr{'y' if checked == 1 else 'ies'}: {len(problems)} problem(s)")
            if problems:
                raise SystemExit(1)
            return
        if not args.checkpoints:
            raise UserError("name the checkpoint files to add (or pass --check)")
        if args.source is not None:
            if len(args.checkpoints) != 1:
                raise UserError("--source copies one checkpoint: name exactly one target file")
            ship_checkpoint(args.source, args.checkpoints[0])
            print(f"copied {args.source} (without optimizer state) to {args.checkpoints[0]}")
        for path in args.checkpoints:
            entry = build_entry(
                path,
                trained_at=args.trained_at,
                hardware=args.hardware,
                figures_dir=None if args.no_figures else args.figures,
            )
            # after each entry (a long run keeps what it has done), into the file as it is now (not the copy read
            # above: another build_manifest.py may have added entries meanwhile)
            add_entry(manifest_path, entry)
            test = entry["test"]
            print(
                f"{entry['file']} ({entry['row']}): test error {test['error_mean_location']:.2f} % (mean locations), "
                f"{test['error_monte_carlo']:.2f} % (Monte Carlo, M = {test['mc_samples']}), "
                f"{test['error_sampled']:.2f} % (sampled)"
            )
        print(f"wrote {manifest_path}")

    return run_cli(job)


if __name__ == "__main__":
    sys.exit(main())
