"""Training throughput of the RAM agent: images per second, the split between environment and network, and the
fraction of the compute floor.

Usage::

    python benchmarks/bench_train.py                       # MNIST, 6 glimpses, batch 128, M = 1 and M = 10, CPU
    python benchmarks/bench_train.py --device cuda --json results/bench_train_cuda.json

One training update is ``agents.trainer.RAMTrainer.update``, the function ``train_agent.py`` calls (same config
defaults, seeding, learning-rate schedule and clipping): reseed and reset the vector env, one rollout with gradients,
the hybrid loss, backward, gradient clipping, a fused Adam step, the schedule's step. The environment's share is
timed by running the same resets and steps with the same batch and no network. ``--precision bf16`` runs the
rollout under ``torch.autocast(bfloat16)`` as ``train_agent.py --precision bf16`` does. The compute floor is the
model's FLOPs per training image (forward multiply-adds x 2, times 3 for forward + backward) over the peak rate of a
large float32 matrix product measured in the same run on the same device.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import tempfile
import time

import torch

from agents.config import resolve_config
from agents.runs import hardware_name
from agents.threads import set_threads
from agents.trainer import RAMTrainer


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_gflops(device: torch.device, size: int = 1024, repeats: int = 20) -> float:
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    for _ in range(3):
        a @ b
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def flops_per_image(model, glimpses: int) -> float:
    """Training FLOPs of one episode: 3 x 2 x the multiply-adds of the Linear layers, per glimpse, x T."""
    macs = sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear))
    return 3 * 2 * macs * glimpses


def bench(env_id: str, batch: int, mc: int, device: torch.device, seconds: float, precision: str = "fp32") -> dict:
    """Time ``RAMTrainer.update`` (the update ``train_agent.py`` runs) and the same environment work alone."""
    with tempfile.TemporaryDirectory() as run_dir:
        config = resolve_config(
            {
                "env": env_id,
                "batch_size": batch,
                "mc_samples": mc,
                "device": str(device),
                "precision": precision,
                "output": run_dir,
            }
        )
        trainer = RAMTrainer(config, progress=False)
        try:
            return _time_trainer(trainer, batch, mc, device, seconds, precision)
        finally:
            trainer.close()


def _time_trainer(trainer: RAMTrainer, batch: int, mc: int, device: torch.device, seconds: float, precision: str):
    env, model = trainer.runner.env, trainer.model

    def update(step: int) -> None:
        trainer.update()

    actions = {
        "location": torch.rand(batch * mc, 2, device=device) * 2 - 1,
        "label": torch.zeros(batch * mc, dtype=torch.long, device=device),
    }

    def env_only(step: int) -> None:
        env.reset(seed=step)
        for _ in range(env.config.glimpses):
            env.step(actions)

    def rate(fn) -> float:
        for i in range(10):
            fn(i)
        _sync(device)
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            fn(n)
            n += 1
        _sync(device)
        return (time.perf_counter() - start) / n

    t_update = rate(update)
    t_env = rate(env_only)
    return {
        "batch": batch,
        "mc_samples": mc,
        "precision": precision,
        "images_per_s": batch / t_update,
        "episodes_per_s": batch * mc / t_update,
        "ms_per_update": 1e3 * t_update,
        "env_ms_per_update": 1e3 * t_env,
        "env_share": t_env / t_update,
        "flops_per_image": flops_per_image(model, env.config.glimpses),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="RAM/MNIST-v0")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--mc", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seconds", type=float, default=10.0, help="timing window per measurement")
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=("fp32", "bf16"))
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument(
        "--threads", default="auto", help="torch CPU threads: N, or auto = $OMP_NUM_THREADS if set, else 1"
    )
    args = parser.parse_args()
    set_threads(args.threads)
    device = torch.device(args.device)
    header = {
        "date": datetime.date.today().isoformat(),
        "device": hardware_name(device),
        "arguments": vars(args),
        "torch": str(torch.__version__),
        "threads": torch.get_num_threads(),
        "load_average": os.getloadavg()[0],
        "env": args.env,
    }
    peak = peak_gflops(device)
    header["matmul_peak_gflops"] = peak
    print(json.dumps(header))
    rows = []
    for precision, mc in ((p, m) for p in args.precision for m in args.mc):
        row = bench(args.env, args.batch, mc, device, args.seconds, precision)
        floor = peak * 1e9 / row["flops_per_image"] / mc  # images/s if every FLOP ran at the matmul peak
        row["compute_floor_images_per_s"] = floor
        row["fraction_of_floor"] = row["images_per_s"] / floor
        rows.append(row)
        print(
            f"{precision} batch {args.batch} M={mc:2d}: {row['images_per_s']:8.0f} images/s "
            f"({row['episodes_per_s']:.0f} episodes/s), "
            f"{row['ms_per_update']:.2f} ms/update, env {100 * row['env_share']:.0f} %, "
            f"{row['flops_per_image'] / 1e6:.1f} MFLOP/episode, floor {floor:.0f} images/s "
            f"-> {100 * row['fraction_of_floor']:.0f} % of it"
        )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({**header, "rows": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
