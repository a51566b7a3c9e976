"""Short diagnostic runs of one stable-baselines3 algorithm with hyperparameter overrides, one JSON row per run.

    python benchmarks/tune_sb3.py --algo ppo --steps 100000 --label lr1e-3 --hyperparams learning_rate=0.001

Trains through :func:`agents.sb3.train_sb3` (the algorithm's hyperparameter file, then ``--hyperparams``), then
scores ``last.pt`` on the first ``--val-images`` validation images (sampled and deterministic "mean location"
error, :func:`agents.sb3.evaluate_sb3_checkpoint`) and, for feed-forward policies with the ``grid`` action, the
entropy of the class head at the last glimpse (where the class is read; ``log 10 = 2.30`` is uniform) and before it.
Appends the row to ``--results`` (strict JSON: ``{"rows": [...]}``), prints it, and rewrites the markdown table of
all rows beside it (``<results>_table.md``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import time
from pathlib import Path

import torch

from agents.checkpoint import load_checkpoint
from agents.config import TrainConfig
from agents.sb3 import ALGORITHMS, evaluate_sb3_checkpoint, load_sb3_model, train_sb3
from agents.threads import set_threads
from ram_env.sb3 import make_sb3_vec_env


def class_head_entropy(payload: dict, images: int = 512) -> list[float] | None:
    """Mean entropy of the class head at each glimpse on validation images (feed-forward ``grid`` policies only)."""
    if payload["observation_form"] != "history" or payload["env_kwargs"].get("action_form") != "grid":
        return None
    model = load_sb3_model(payload)
    kwargs = {k: v for k, v in payload["env_kwargs"].items() if k != "split"}
    venv = make_sb3_vec_env(payload["env_id"], n_envs=images, observation_form="history", split="validation", **kwargs)
    venv.seed(0)
    obs = venv.reset()
    out = []
    for _ in range(int(kwargs["glimpses"])):
        with torch.no_grad():
            obs_t, _ = model.policy.obs_to_tensor(obs)
            heads = model.policy.get_distribution(obs_t).distribution
            out.append(round(float(heads[-1].entropy().mean()), 3))
        actions, _ = model.predict(obs, deterministic=True)
        obs, *_ = venv.step(actions)
    venv.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--algo", required=True, choices=sorted(ALGORITHMS))
    parser.add_argument("--env", default="RAM/MNIST-v0")
    parser.add_argument("--env-args", default=None)
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--hyperparams", default=None, help="key=value pairs over the algorithm's file")
    parser.add_argument("--learning-rate", type=float, default=None)
    parser.add_argument("--label", required=True, help="what this run changes, for the table")
    parser.add_argument("--val-images", type=int, default=2000)
    parser.add_argument("--runs", type=Path, default=Path("runs/tune_sb3"))
    parser.add_argument("--results", type=Path, default=Path("results/sb3_tuning.json"))
    args = parser.parse_args(argv)
    set_threads("auto")
    extra = {} if args.learning_rate is None else {"learning_rate": args.learning_rate}
    config = TrainConfig(
        env=args.env,
        env_args=args.env_args,
        algo=args.algo,
        seed=args.seed,
        device="cpu",
        output=str(args.runs / f"{args.algo}-{args.label}"),
        overwrite=True,
        total_timesteps=args.steps,
        hyperparams=args.hyperparams,
        **extra,
    )
    start = time.perf_counter()
    summary = train_sb3(config, progress=False)
    train_time = time.perf_counter() - start
    payload = load_checkpoint(Path(summary["run_dir"]) / "last.pt")
    result, _ = evaluate_sb3_checkpoint(
        payload, split="validation", mc_samples=1, device="cpu", seed=0, max_images=args.val_images
    )
    row = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "algo": args.algo,
        "env": args.env,
        "env_args": args.env_args,
        "label": args.label,
        "hyperparams": args.hyperparams,
        "learning_rate": args.learning_rate,
        "seed": args.seed,
        "env_steps": summary["timesteps"],
        "train_seconds": round(train_time, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "best_val_success_during_training": summary["best_val_success"],
        "val_images": result.images,
        "val_error_sampled": round(result.error_sampled, 2),
        "val_error_deterministic": round(result.error_mean_location, 2),
        "class_head_entropy_per_glimpse": class_head_entropy(payload),
    }
    print(json.dumps(row), flush=True)
    rows = json.loads(args.results.read_text())["rows"] if args.results.exists() else []
    rows.append(row)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps({"rows": rows}, indent=1, allow_nan=False) + "\n")
    args.results.with_name(args.results.stem + "_table.md").write_text(table(rows))
    return 0


def table(rows: list[dict]) -> str:
    """The rows as a markdown table (validation error in %, on ``val_images`` validation images)."""
    lines = [
        "| algo | env | label | seed | env steps | train (s) | load | val error sampled | val error deterministic "
        "| class-head entropy per glimpse |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        entropy = r["class_head_entropy_per_glimpse"]
        lines.append(
            f"| {r['algo']} | {r['env']}{' ' + r['env_args'] if r['env_args'] else ''} | {r['label']} | {r['seed']} | "
            f"{r['env_steps']:,} | {r['train_seconds']:.0f} | {r['load_average'][0]:.1f} | "
            f"{r['val_error_sampled']:.2f} | {r['val_error_deterministic']:.2f} | "
            f"{' '.join(f'{e:.2f}' for e in entropy) if entropy else 'n/a'} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
