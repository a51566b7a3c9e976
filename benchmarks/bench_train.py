"""Training throughput of the RAM agent per batch size: images per second, ms per update, the split between
environment and network, and the share of a compute floor.

Usage::

    python benchmarks/bench_train.py                       # MNIST, 6 glimpses, batches 128, 1024, 8192, fp32, CPU
    python benchmarks/bench_train.py --batch-sizes 128 --mc 1 10 --precision fp32 bf16
    python benchmarks/bench_train.py --device cuda --json results/bench_train_cuda.json
    python benchmarks/bench_train.py --preset cluttered100-4g-lstm-gpu   # a preset's own task, model and batch

One training update is ``agents.trainer.RAMTrainer.update``, the function ``train_agent.py`` calls (same config
defaults, seeding, learning-rate schedule and clipping): reseed and reset the vector env, one rollout with gradients,
the hybrid loss, backward, gradient clipping, a fused Adam step, the schedule's step. The environment's share is
timed by running the same resets and steps with the same batch and no network. ``--precision bf16`` runs the
rollout under ``torch.autocast(bfloat16)`` as ``train_agent.py --precision bf16`` does.

**Compute floor.** ``floor_ms_per_update`` is the time the update's matrix products alone would take at a matrix-
product rate measured in the same run, on the same device, in the same precision, with a ``torch.mm`` of the same
size as the model's largest layer at this batch: ``(B * M, in) @ (in, out)`` of the core (``gemm_gflops``,
``gemm_shape``). The update's matrix-product FLOPs (``flops_per_image`` x B) are 2 x the multiply-adds of every
``Linear`` (and ``LSTMCell``) per glimpse, x 3 for forward + backward (the backward pass computes the input and the
weight gradients, each as many FLOPs as the forward product), x T glimpses. The x 3 slightly overcounts (layers fed by
the observation or by a detached state need no input gradient: about 5 % of the FLOPs of the default MNIST model),
which makes the floor a little slower than exact; convolutions (``--conv-glimpse``) are not counted. Everything else
(element-wise ops, the environment, the optimiser, Python and autograd overhead) counts as zero, so
``share_of_floor = floor_ms_per_update / ms_per_update`` (<= 1 unless the real products run faster than the probe) is
the fraction of the update spent at the hardware's achievable matrix-product speed. ``fraction_of_floor`` is the
same number (the field earlier versions wrote), ``compute_floor_images_per_s`` the images/s at the floor.
``matmul_peak_gflops`` in the header is a large 1024^3 fp32 product, for reference.

**Profile (CPU).** Each row also profiles 20 updates with ``torch.profiler`` (``profile``: self CPU time per
operator, the top 8, and ``matmul_share``, the share spent in the matrix-product kernels ``mm`` / ``addmm``): the part
of an update that only faster matrix products, or fewer of them, can shorten.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from agents.config import UserError, resolve_config
from agents.runs import git_commit, hardware_name, write_json
from agents.threads import set_threads
from agents.trainer import GRAPH_WARMUP, RAMTrainer
from ram_env.vector import GlimpseVectorEnv


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
    """Training matrix-product FLOPs of one episode: 3 (forward + backward) x 2 x the multiply-adds of the ``Linear``
    and ``LSTMCell`` layers, per glimpse, x T (see the module docstring)."""
    macs = 0
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            macs += m.in_features * m.out_features
        elif isinstance(m, torch.nn.LSTMCell):
            macs += 4 * m.hidden_size * (m.input_size + m.hidden_size)
    return 3 * 2 * macs * glimpses


def largest_layer(model) -> tuple[int, int]:
    """``(in, out)`` of the ``Linear`` (or an ``LSTMCell``'s stacked gates) with the most multiply-adds."""
    shapes = [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, torch.nn.Linear)]
    shapes += [
        (m.input_size + m.hidden_size, 4 * m.hidden_size) for m in model.modules() if isinstance(m, torch.nn.LSTMCell)
    ]
    return max(shapes, key=lambda s: s[0] * s[1])


def gemm_gflops(rows: int, inner: int, cols: int, device: torch.device, precision: str, seconds: float = 0.5) -> float:
    """Achieved GFLOP/s of ``torch.mm`` of ``(rows, inner) @ (inner, cols)`` in ``precision``, best of 5 windows."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a = torch.randn(rows, inner, device=device).to(dtype)
    b = torch.randn(inner, cols, device=device).to(dtype)
    for _ in range(3):
        torch.mm(a, b)
    best = float("inf")
    for _ in range(5):
        _sync(device)
        n, start = 0, time.perf_counter()
        while n < 3 or time.perf_counter() - start < seconds / 5:
            torch.mm(a, b)
            n += 1
        _sync(device)
        best = min(best, (time.perf_counter() - start) / n)
    return 2 * rows * inner * cols / best / 1e9


def add_floor(row: dict, device: torch.device) -> None:
    """Add the compute floor of a :func:`bench` row (see the module docstring) to it."""
    rows = row["batch"] * row["mc_samples"]
    inner, cols = row["largest_layer"]
    rate = gemm_gflops(rows, inner, cols, device, row["precision"])
    floor_s = row["flops_per_image"] * row["batch"] * row["mc_samples"] / (rate * 1e9)
    row["gemm_shape"] = [rows, inner, cols]
    row["gemm_gflops"] = rate
    row["floor_ms_per_update"] = 1e3 * floor_s
    row["share_of_floor"] = row["fraction_of_floor"] = 1e3 * floor_s / row["ms_per_update"]
    row["compute_floor_images_per_s"] = row["batch"] / floor_s


def bench(
    env_id: str,
    batch: int,
    mc: int,
    device: torch.device,
    seconds: float,
    precision: str = "fp32",
    cuda_graph: bool = True,
    preset: str | None = None,
) -> dict:
    """Time ``RAMTrainer.update`` (the update ``train_agent.py`` runs) and the same environment work alone.

    :param cuda_graph: on CUDA, the trainer's captured update (after its warm-up and capture, which are not timed);
        False times the eager update.
    :param preset: train this preset's recipe (its environment, glimpses and model; ``env_id`` is then ignored) at
        ``batch`` images per update.
    """
    with tempfile.TemporaryDirectory() as run_dir:
        config = resolve_config(
            {
                **({"preset": preset} if preset else {"env": env_id}),
                "batch_size": batch,
                "mc_samples": mc,
                "device": str(device),
                "precision": precision,
                "cuda_graph": cuda_graph,
                "output": run_dir,
            }
        )
        trainer = RAMTrainer(config, progress=False)
        try:
            return _time_trainer(trainer, batch, mc, device, seconds, precision)
        finally:
            trainer.close()


def env_episodes(env: GlimpseVectorEnv) -> Callable[[int], None]:
    """The environment work of one update alone, as a function of the update's number: a reset seeded by it, then
    one step per glimpse with fixed random locations (drawn once, on the env's device)."""
    n, device = env.num_envs, env.device
    actions = {
        "location": torch.rand(n, 2, device=device) * 2 - 1,
        "label": torch.zeros(n, dtype=torch.long, device=device),
    }

    def episodes(step: int) -> None:
        env.reset(seed=step)
        for _ in range(env.config.glimpses):
            env.step(actions)

    return episodes


def _time_trainer(trainer: RAMTrainer, batch: int, mc: int, device: torch.device, seconds: float, precision: str):
    env, model = trainer.runner.env, trainer.model

    def update(step: int) -> None:
        trainer.update()

    env_only = env_episodes(env)

    def rate(fn, warmup: int = 2) -> float:
        for i in range(warmup):  # the first allocates, the second reuses
            fn(i)
        _sync(device)
        n, start = 0, time.perf_counter()
        while n < 3 or time.perf_counter() - start < seconds:
            fn(n)
            n += 1
        _sync(device)
        return (time.perf_counter() - start) / n

    t_update = rate(update, warmup=GRAPH_WARMUP + 2)  # on CUDA: the eager warm-up, the capture and its check
    # The captured part alone, replayed back to back: the device's time for it (launching a graph costs the host
    # microseconds). ms_per_update - replay_ms is what runs outside the graph: seeding, clipping, Adam, the schedule.
    graph = trainer.graph
    t_replay = None if graph is None else rate(lambda step: graph.replay())
    t_env = rate(env_only)
    profile = profile_update(update) if device.type == "cpu" else None
    return {
        "batch": batch,
        "cuda_graph": trainer.graph is not None,
        "mc_samples": mc,
        "precision": precision,
        "images_per_s": batch / t_update,
        "episodes_per_s": batch * mc / t_update,
        "ms_per_update": 1e3 * t_update,
        "replay_ms": None if t_replay is None else 1e3 * t_replay,
        "env_ms_per_update": 1e3 * t_env,
        "env_share": t_env / t_update,
        "flops_per_image": flops_per_image(model, env.config.glimpses),
        "largest_layer": list(largest_layer(model)),
        "profile": profile,
    }


#: The matrix-product kernels of an update on CPU (forward and backward of every ``Linear`` and ``LSTMCell``).
MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")


def profile_update(update, updates: int = 20, top: int = 8) -> dict:
    """Where an update's CPU time goes: ``torch.profiler`` over ``updates`` updates, self CPU time per operator.

    ``matmul_share`` is the share of the matrix-product kernels (:data:`MATMUL_OPS`); the profiler's own cost per
    operator call makes the many small operators look somewhat dearer than they are, so the share is a lower bound.
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for step in range(updates):
            update(step)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    ranked = sorted(events, key=lambda e: -e.self_cpu_time_total)
    return {
        "updates": updates,
        "self_cpu_ms_per_update": total / updates / 1e3,
        "operator_calls_per_update": sum(e.count for e in events) / updates,
        "matmul_share": sum(e.self_cpu_time_total for e in events if e.key in MATMUL_OPS) / total,
        "top": [
            {"op": e.key, "share": e.self_cpu_time_total / total, "calls_per_update": e.count / updates}
            for e in ranked[:top]
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="RAM/MNIST-v0")
    parser.add_argument(
        "--preset",
        help="time this train_agent.py preset's update (its task, glimpses and model, e.g. an LSTM core) instead of "
        "--env with the default model; batch: the preset's own unless --batch-sizes / --batch is given",
    )
    parser.add_argument(
        "--batch-sizes", type=int, nargs="+", default=None, help="distinct images per update (default 128 1024 8192)"
    )
    parser.add_argument("--batch", type=int, help="one batch size (the same as --batch-sizes N)")
    parser.add_argument("--mc", type=int, nargs="+", default=[1])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seconds", type=float, default=10.0, help="timing window per measurement")
    parser.add_argument("--precision", nargs="+", default=["fp32"], choices=("fp32", "bf16"))
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument(
        "--cuda-graph",
        nargs="+",
        default=["on"],
        choices=("on", "off"),
        help="on CUDA: the captured update (on), the eager one (off), or both (on off); no effect on CPU",
    )
    parser.add_argument(
        "--threads", default="auto", help="torch CPU threads: N, or auto = $OMP_NUM_THREADS if set, else 1"
    )
    args = parser.parse_args()
    if args.batch is not None:
        args.batch_sizes = [args.batch]
    if args.preset is not None:
        try:
            recipe = resolve_config({"preset": args.preset})
        except UserError as error:  # an unknown preset: the message lists the known ones
            parser.error(str(error))
        args.env = recipe.env
        args.batch_sizes = args.batch_sizes or [recipe.batch_size]
    args.batch_sizes = args.batch_sizes or [128, 1024, 8192]
    set_threads(args.threads)
    device = torch.device(args.device)
    header = {
        "date": datetime.date.today().isoformat(),
        "device": hardware_name(device),
        "arguments": vars(args),
        "torch": str(torch.__version__),
        "git_commit": git_commit(),  # of the code timed (the agents package imported)
        "threads": torch.get_num_threads(),
        "load_average": os.getloadavg()[0],
        "env": args.env,
        "preset": args.preset,
    }
    header["matmul_peak_gflops"] = peak_gflops(device)
    print(json.dumps(header))
    rows = []
    graphs = [mode == "on" for mode in args.cuda_graph] if device.type == "cuda" else [False]
    grid = [(b, p, m, g) for b in args.batch_sizes for p in args.precision for m in args.mc for g in graphs]
    for batch, precision, mc, graph in grid:
        row = bench(args.env, batch, mc, device, args.seconds, precision, cuda_graph=graph, preset=args.preset)
        add_floor(row, device)
        row["load_average"] = os.getloadavg()[0]
        rows.append(row)
        print(
            f"{precision}{' graph' if row['cuda_graph'] else ''} batch {batch:5d} M={mc:2d}: "
            f"{row['images_per_s']:8.0f} images/s "
            f"({row['episodes_per_s']:.0f} episodes/s), {row['ms_per_update']:8.2f} ms/update, "
            + (f"graph replay alone {row['replay_ms']:.2f} ms, " if row["replay_ms"] is not None else "")
            + f"env {100 * row['env_share']:3.0f} %, floor {row['floor_ms_per_update']:7.2f} ms "
            f"({row['flops_per_image'] / 1e6:.1f} MFLOP/image at {row['gemm_gflops']:.0f} GFLOP/s) "
            f"-> {100 * row['share_of_floor']:3.0f} % of it; load {row['load_average']:.2f}"
            + (
                f"; profiled: {100 * row['profile']['matmul_share']:.0f} % of the CPU time in matrix products"
                if row["profile"]
                else ""
            )
        )
    header["load_average_end"] = os.getloadavg()[0]
    if args.json:
        write_json(Path(args.json), {**header, "rows": rows})


if __name__ == "__main__":
    main()
