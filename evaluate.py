"""Evaluate a checkpoint on the whole test (or validation) split.

    python evaluate.py runs/<run>/best.pt --split test --mc-samples 10 --json results.json --plot figures/

Prints the test error three ways (sampled locations, mean locations, M-sample Monte Carlo averaging); ``--plot DIR``
writes ``confusion.png``, ``glimpses.png`` (glimpse paths on sample images) and ``episode.gif``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from agents.cli import run_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evaluate.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a checkpoint (.pt) written by train_agent.py, or its run directory")
    parser.add_argument("--split", choices=("test", "validation"), default="test")
    parser.add_argument("--mc-samples", type=int, default=10, help="Monte Carlo samples per image (default 10)")
    parser.add_argument("--json", type=Path, help="write the figures to this JSON file")
    parser.add_argument("--plot", type=Path, help="write confusion.png, glimpses.png and episode.gif here")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument(
        "--seed", type=int, default=None, help="seed of the initial and sampled locations (default: the run's seed)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def job() -> None:
        from agents.checkpoint import load_checkpoint
        from agents.config import UserError
        from agents.evaluation import evaluate_checkpoint
        from agents.trainer import resolve_device

        if args.mc_samples < 1:
            raise UserError(f"--mc-samples must be >= 1, got {args.mc_samples}")
        device = resolve_device(args.device)
        payload = load_checkpoint(args.checkpoint, map_location=device)
        seed = payload["config"].get("seed", 0) if args.seed is None else args.seed
        result, report = evaluate_checkpoint(
            payload, split=args.split, mc_samples=args.mc_samples, device=device, seed=seed
        )
        print(f"{report['env_id']} {args.split}: {result.images} images")
        print(f"  error, sampled locations:      {result.error_sampled:6.2f} %")
        print(f"  error, mean locations:         {result.error_mean_location:6.2f} %")
        print(f"  error, Monte Carlo (M = {result.mc_samples:2d}):   {result.error_monte_carlo:6.2f} %")
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, indent=2) + "\n")
        if args.plot:
            from agents.figures import plot_confusion, plot_glimpse_grid, save_episode_gif
            from ram_env.task import Task, TaskConfig

            args.plot.mkdir(parents=True, exist_ok=True)
            task = Task(TaskConfig.from_kwargs(**report["env_kwargs"]))
            title = f"{report['env_id']} {args.split}: {result.error_monte_carlo:.2f} % error"
            plot_confusion(result, task.n_classes, args.plot / "confusion.png", title)
            if result.locations.shape[1]:  # the whole-image controls take no glimpses
                plot_glimpse_grid(result, task, args.plot / "glimpses.png")
                save_episode_gif(result, task, 0, args.plot / "episode.gif")
            print(f"  figures in {args.plot}/")

    return run_cli(job)


if __name__ == "__main__":
    sys.exit(main())
