"""Evaluate a checkpoint on the whole test (or validation) split.

    python evaluate.py runs/<run>/best.pt --split test --mc-samples 10 --json results.json --plot figures/

Prints the test error three ways (sampled locations, mean locations, M-sample Monte Carlo averaging); ``--plot DIR``
writes ``confusion.png``, ``glimpses.png`` (glimpse paths on sample images) and ``episode.gif``. A run directory is
scored by its ``best.pt`` (lowest validation error), or by its ``last.pt`` when it has no ``best.pt``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agents.cli import run_cli


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The command line; ``prog`` defaults to the name it was started by (``evaluate.py``, ``ram-evaluate``)."""
    from agents.config import DATA_HELP

    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0], epilog=DATA_HELP)
    parser.add_argument(
        "checkpoint",
        help="a checkpoint (.pt) written by train_agent.py, or its run directory (scores best.pt, else last.pt)",
    )
    parser.add_argument(
        "--split",
        choices=("test", "validation"),
        default="test",
        help="the split scored, every image once (default: test)",
    )
    parser.add_argument("--mc-samples", type=int, default=10, help="Monte Carlo samples per image (default: 10)")
    parser.add_argument("--json", type=Path, help="write the figures to this JSON file")
    parser.add_argument("--plot", type=Path, help="write confusion.png, glimpses.png and episode.gif here")
    parser.add_argument(
        "--device",
        default="auto",
        choices=("auto", "cpu", "cuda"),
        help="where the agent and the environment run; auto picks cuda when available (default: auto)",
    )
    parser.add_argument(
        "--threads",
        default="auto",
        help="torch CPU threads: N, or auto = $OMP_NUM_THREADS if set, else 1 (default: auto)",
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="seed of the initial and sampled locations (default: the run's seed)"
    )
    return parser


def dataset_label(env_id: str, env_kwargs: dict) -> str:
    """``"RAM/MNIST-v0 (data set mnist, layout seed 0)"``: the env id and the data it was built on."""
    dataset = env_kwargs.get("dataset", "mnist")
    return f"{env_id} (data set {dataset}, layout seed {env_kwargs.get('layout_seed', 0)})"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def job() -> None:
        from agents.checkpoint import load_checkpoint, resolve_checkpoint_path
        from agents.config import UserError
        from agents.policies import evaluate_checkpoint
        from agents.runs import resolve_device, write_json
        from agents.threads import parse_threads, set_threads

        if args.mc_samples < 1:
            raise UserError(f"--mc-samples must be >= 1, got {args.mc_samples}")
        try:
            set_threads(parse_threads(args.threads))
        except ValueError as err:
            raise UserError(f"--{err}") from None

        device = resolve_device(args.device)
        path = resolve_checkpoint_path(args.checkpoint, prefer="best")
        payload = load_checkpoint(path, map_location=device)
        seed = payload["config"].get("seed", 0) if args.seed is None else args.seed
        result, report = evaluate_checkpoint(
            payload, split=args.split, mc_samples=args.mc_samples, device=device, seed=seed
        )
        report["checkpoint"] = str(path)
        epoch = payload.get("epoch")
        print(f"scored {path}" + (f" (epoch {epoch})" if epoch is not None else ""))
        print(f"{dataset_label(report['env_id'], report['env_kwargs'])}, {args.split} split: {result.images} images")
        print(f"  error, sampled locations:      {result.error_sampled:6.2f} %")
        print(f"  error, mean locations:         {result.error_mean_location:6.2f} %")
        print(f"  error, Monte Carlo (M = {result.mc_samples:2d}):   {result.error_monte_carlo:6.2f} %")
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            write_json(args.json, report)
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
