"""Benchmark the stable-baselines3 algorithms on a glimpse task: test error three ways, wall time, learning curves.

    python benchmarks/bench_sb3.py                                    # every algorithm, the default budgets
    python benchmarks/bench_sb3.py --algos ppo auxppo --steps 50000
    python benchmarks/bench_sb3.py --steps 2000000 --offpolicy-steps 2000000 --seeds 1 2 3   # the full benchmark
    python benchmarks/bench_sb3.py --algos sac td3 --offpolicy-minutes 30 --offpolicy-steps 100000   # PPO's wall time

Each (algorithm, seed) trains through :func:`agents.sb3.train_sb3` (the code ``train_agent.py --algo NAME`` runs,
with the algorithm's hyperparameter file in ``agents/sb3/hyperparams/``) for the same number of environment steps
(off-policy algorithms get ``--offpolicy-steps``: their gradient steps make each environment step far dearer on a
CPU; with ``--offpolicy-minutes`` they stop at that wall time instead, if it comes first: "as many steps as fit in
the time an on-policy run took"), then its ``last.pt`` is scored on the test split by
:func:`agents.sb3.evaluate_sb3_checkpoint` (what ``evaluate.py`` runs). Writes, under ``--results`` with the
``--name`` prefix: ``<name>_bench.json`` (one row per run: algorithm, env, seed, environment steps, wall times, the
three test errors and the validation curve), ``<name>_table.md`` and ``<name>_curves.png`` (validation error against
environment steps, every run in one figure). The JSON is rewritten after each run, so an interrupted benchmark keeps
the runs it finished; ``--append`` adds more seeds (or algorithms) to an earlier invocation's file, refusing one made
with other settings. Wall times depend on the machine and on whatever else runs on it.
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
from agents.figures import plot_sb3_curves
from agents.runs import hardware_name
from agents.sb3 import ALGORITHMS, evaluate_sb3_checkpoint, train_sb3
from agents.threads import set_threads

DEFAULT_ALGOS = ("ppo", "a2c", "sac", "td3", "recurrentppo", "auxppo")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--algos", nargs="+", default=list(DEFAULT_ALGOS), choices=sorted(ALGORITHMS))
    parser.add_argument("--env", default="RAM/MNIST-v0")
    parser.add_argument("--env-args", default=None, help="key=value environment overrides, as train_agent.py")
    parser.add_argument(
        "--hyperparams", default=None, help="key=value overrides of every algorithm's file, as train_agent.py"
    )
    parser.add_argument("--steps", type=int, default=150_000, help="environment steps (on-policy and recurrent)")
    parser.add_argument("--offpolicy-steps", type=int, default=40_000, help="environment steps (SAC, TD3, ...)")
    parser.add_argument(
        "--offpolicy-minutes",
        type=float,
        default=None,
        help="wall-time budget of each off-policy run (train_agent.py --time-limit): it stops at this time or at "
        "--offpolicy-steps, whichever comes first (it evaluates every fifth of --offpolicy-steps and when it stops)",
    )
    parser.add_argument("--n-envs", type=int, default=None, help="default: the hyperparameter file's n_envs")
    parser.add_argument("--glimpses", type=int, default=None, help="default: the env id's")
    parser.add_argument("--mc-samples", type=int, default=10)
    parser.add_argument("--max-test-images", type=int, default=None, help="default: the whole test split")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--runs", type=Path, default=Path("runs/bench_sb3"))
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--name", default="sb3", help="prefix of the result files")
    parser.add_argument(
        "--append",
        action="store_true",
        help="keep the rows already in <name>_bench.json (other seeds or algorithms of the same benchmark, e.g. run "
        "in another session) and add this run's; a row of the same algorithm and seed is replaced",
    )
    parser.add_argument(
        "--threads", default="auto", help="torch CPU threads: N, or auto = $OMP_NUM_THREADS if set, else 1"
    )
    args = parser.parse_args(argv)
    set_threads(args.threads)

    planned = {(algo, seed) for seed in args.seeds for algo in args.algos}
    kept = [r for r in earlier_rows(args) if (r["algo"], r["seed"]) not in planned] if args.append else []
    rows = []
    for seed in args.seeds:
        for algo in args.algos:
            rows.append(run_one(algo, seed, args))
            print(json.dumps(rows[-1]), flush=True)
            write(kept + rows, args)
    return 0


#: the arguments that make two runs rows of one benchmark (what --append checks)
SAME_BENCHMARK = (
    "env",
    "env_args",
    "hyperparams",
    "steps",
    "offpolicy_steps",
    "offpolicy_minutes",
    "n_envs",
    "glimpses",
    "mc_samples",
    "max_test_images",
    "device",
)


def earlier_rows(args: argparse.Namespace) -> list[dict]:
    """The rows of ``<name>_bench.json`` for ``--append`` (none if there is no file yet); refuses a file made with
    other settings, whose rows would not be comparable with this run's."""
    path = args.results / f"{args.name}_bench.json"
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    earlier = data["meta"]["arguments"]
    differ = [k for k in SAME_BENCHMARK if earlier.get(k) != getattr(args, k)]
    if differ:
        given = ", ".join(f"{k}: {earlier.get(k)!r} there, {getattr(args, k)!r} here" for k in differ)
        raise SystemExit(f"--append: {path} was made with other settings ({given}); use another --name")
    return data["rows"]


def run_one(algo: str, seed: int, args: argparse.Namespace) -> dict:
    """Train ``algo`` with ``seed``, score it on the test split; the JSON row."""
    off_policy = ALGORITHMS[algo].kind == "off-policy"
    config = TrainConfig(
        env=args.env,
        env_args=args.env_args,
        algo=algo,
        seed=seed,
        device=args.device,
        output=str(args.runs / f"{algo}__{seed}"),
        overwrite=True,
        glimpses=args.glimpses,
        total_timesteps=args.offpolicy_steps if off_policy else args.steps,
        time_limit=args.offpolicy_minutes if off_policy else None,
        n_envs=args.n_envs,
        hyperparams=args.hyperparams,
    )
    start = time.perf_counter()
    summary = train_sb3(config, progress=False)
    train_time = time.perf_counter() - start
    start = time.perf_counter()
    payload = load_checkpoint(Path(summary["run_dir"]) / "last.pt")
    result, _ = evaluate_sb3_checkpoint(
        payload, split="test", mc_samples=args.mc_samples, device=args.device, seed=0, max_images=args.max_test_images
    )
    return {
        "algo": algo,
        "env": args.env,
        "seed": seed,
        "hyperparams": args.hyperparams,
        "action_form": summary["action_form"],
        "observation_form": summary["observation_form"],
        "env_steps": summary["timesteps"],
        "stopped": summary["stopped"],  # "time limit": --offpolicy-minutes ended it before its steps
        "train_seconds": round(train_time, 1),
        "eval_seconds": round(time.perf_counter() - start, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "best_val_success": summary["best_val_success"],
        "test_images": result.images,
        "error_sampled": round(result.error_sampled, 2),
        "error_mean_location": round(result.error_mean_location, 2),
        "error_monte_carlo": round(result.error_monte_carlo, 2),
        "validation_curve": summary["validation_curve"],
    }


def write(rows: list[dict], args: argparse.Namespace) -> None:
    args.results.mkdir(parents=True, exist_ok=True)
    seeds = sorted({r["seed"] for r in rows})  # with --append, the earlier invocations' seeds too
    meta = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "arguments": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "hardware": hardware_name(torch.device(args.device)),
        "load_average": os.getloadavg(),
        "env": args.env,
        "glimpses": args.glimpses,
        "n_envs": args.n_envs,
        "mc_samples": args.mc_samples,
        "seeds": seeds,
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "machine": platform.platform(),
    }
    text = json.dumps({"meta": meta, "rows": rows}, indent=2, allow_nan=False)
    (args.results / f"{args.name}_bench.json").write_text(text + "\n")
    lines = [
        f"{args.env}, seeds {', '.join(map(str, seeds))}, {args.device}; test error (%) on "
        f"{rows[0]['test_images']} test images, Monte Carlo = majority vote of M = {args.mc_samples} sampled "
        "episodes. Wall times are from a shared machine and are noisy.",
        "",
        "| algo | seed | actions | observations | env steps | train time (s) | sampled | mean location | Monte Carlo |",
        "| --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['algo']} | {r['seed']} | {r['action_form']} | {r['observation_form']} | {r['env_steps']:,}"
            f"{' (time limit)' if r.get('stopped') == 'time limit' else ''} | "
            f"{r['train_seconds']:.0f} | {r['error_sampled']:.2f} | {r['error_mean_location']:.2f} | "
            f"{r['error_monte_carlo']:.2f} |"
        )
    (args.results / f"{args.name}_table.md").write_text("\n".join(lines) + "\n")
    plot_sb3_curves(rows, args.results / f"{args.name}_curves.png", title=args.env)


if __name__ == "__main__":
    raise SystemExit(main())
