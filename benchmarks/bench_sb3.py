"""Benchmark the stable-baselines3 algorithms on RAM/MNIST-v0 (6 glimpses): test error three ways and wall time.

    python benchmarks/bench_sb3.py                       # every algorithm, the default budgets
    python benchmarks/bench_sb3.py --algos ppo auxppo --steps 50000

Each algorithm trains through :func:`agents.sb3.train_sb3` (the code ``train_agent.py --algo NAME`` runs) for the
same number of environment steps (off-policy algorithms get ``--offpolicy-steps``: their gradient steps make each
environment step far dearer on a CPU), then its ``last.pt`` is scored on the whole MNIST test split by
:func:`agents.sb3.evaluate_sb3_checkpoint` (what ``evaluate.py`` runs). Writes ``results/sb3_table.md`` and
``results/sb3_bench.json``. Wall times depend on the machine and on whatever else runs on it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from pathlib import Path

import torch

from agents.checkpoint import load_checkpoint
from agents.config import TrainConfig
from agents.runs import hardware_name
from agents.sb3 import ALGORITHMS, evaluate_sb3_checkpoint, train_sb3
from agents.threads import set_threads

DEFAULT_ALGOS = ("ppo", "a2c", "sac", "td3", "recurrentppo", "auxppo")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--algos", nargs="+", default=list(DEFAULT_ALGOS), choices=sorted(ALGORITHMS))
    parser.add_argument("--steps", type=int, default=150_000, help="environment steps (on-policy and recurrent)")
    parser.add_argument("--offpolicy-steps", type=int, default=40_000, help="environment steps (SAC, TD3, ...)")
    parser.add_argument("--n-envs", type=int, default=64)
    parser.add_argument("--glimpses", type=int, default=6)
    parser.add_argument("--mc-samples", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--runs", type=Path, default=Path("runs/bench_sb3"))
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument(
        "--threads", default="auto", help="torch CPU threads: N, or auto = $OMP_NUM_THREADS if set, else 1"
    )
    args = parser.parse_args(argv)
    set_threads(args.threads)

    rows = []
    for algo in args.algos:
        off_policy = ALGORITHMS[algo].kind == "off-policy"
        config = TrainConfig(
            env="RAM/MNIST-v0",
            algo=algo,
            seed=args.seed,
            device=args.device,
            output=str(args.runs / algo),
            overwrite=True,
            glimpses=args.glimpses,
            total_timesteps=args.offpolicy_steps if off_policy else args.steps,
            n_envs=args.n_envs,
        )
        start = time.perf_counter()
        summary = train_sb3(config, progress=False)
        train_time = time.perf_counter() - start
        start = time.perf_counter()
        payload = load_checkpoint(Path(summary["run_dir"]) / "last.pt")
        result, _ = evaluate_sb3_checkpoint(
            payload, split="test", mc_samples=args.mc_samples, device=args.device, seed=0
        )
        row = {
            "algo": algo,
            "action_form": summary["action_form"],
            "observation_form": summary["observation_form"],
            "env_steps": summary["timesteps"],
            "train_seconds": round(train_time, 1),
            "eval_seconds": round(time.perf_counter() - start, 1),
            "best_val_success": summary["best_val_success"],
            "test_images": result.images,
            "error_sampled": round(result.error_sampled, 2),
            "error_mean_location": round(result.error_mean_location, 2),
            "error_monte_carlo": round(result.error_monte_carlo, 2),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
        write(rows, args)
    return 0


def write(rows: list[dict], args: argparse.Namespace) -> None:
    args.results.mkdir(parents=True, exist_ok=True)
    meta = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "arguments": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "hardware": hardware_name(torch.device(args.device)),
        "load_average": os.getloadavg(),
        "env": "RAM/MNIST-v0",
        "glimpses": args.glimpses,
        "n_envs": args.n_envs,
        "mc_samples": args.mc_samples,
        "seed": args.seed,
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "machine": platform.platform(),
    }
    (args.results / "sb3_bench.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    lines = [
        f"RAM/MNIST-v0, {args.glimpses} glimpses, {args.n_envs} parallel envs, seed {args.seed}, {args.device}; "
        f"test error (%) on all {rows[0]['test_images']} test images, Monte Carlo = majority vote of "
        f"M = {args.mc_samples} sampled episodes. Wall times are from a shared machine and are noisy.",
        "",
        "| algo | actions | observations | env steps | train time (s) | sampled | mean location | Monte Carlo |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['algo']} | {r['action_form']} | {r['observation_form']} | {r['env_steps']:,} | "
            f"{r['train_seconds']:.0f} | {r['error_sampled']:.2f} | {r['error_mean_location']:.2f} | "
            f"{r['error_monte_carlo']:.2f} |"
        )
    (args.results / "sb3_table.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
