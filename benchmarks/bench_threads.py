"""Milliseconds per RAM training update against torch's thread count, on a quiet and on a loaded machine.

Usage::

    python benchmarks/bench_threads.py                        # MNIST, batch 128, 1 and 2 threads, idle and loaded
    python benchmarks/bench_threads.py --threads 1 2 4 --seconds 5 --json results/bench_threads_cpu.json

Each timed call is ``agents.trainer.RAMTrainer._update`` (a fresh seeded batch, the rollout, the hybrid loss, backward,
clipping, an Adam step) of a trainer built exactly as ``train_agent.py`` builds it (run directory in a temporary
folder). "loaded" starts ``--load-procs`` extra Python processes, each running a float32 matrix-product loop on
``--load-threads`` torch threads, for the duration of those cases; "idle" runs without them. Other processes already
running on the machine are not stopped: the load average at the start is recorded, say what else ran when you quote
the figures. The cases are interleaved over ``--rounds`` rounds so that a drift in the background load hits all of
them alike; each reports the mean, median and 90th percentile of its update times over all rounds.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from agents.config import resolve_config
from agents.runs import cpu_model
from agents.threads import set_threads
from agents.trainer import RAMTrainer

_LOAD_SCRIPT = """
import sys, torch
torch.set_num_threads(int(sys.argv[1]))
a = torch.randn(512, 512)
print("ready", flush=True)
while True:
    a = torch.tanh(a @ a)
"""


def start_load(procs: int, threads: int) -> list[subprocess.Popen]:
    """Start ``procs`` busy matrix-product processes and wait until each is running."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    load = []
    for _ in range(procs):
        p = subprocess.Popen(
            [sys.executable, "-c", _LOAD_SCRIPT, str(threads)], stdout=subprocess.PIPE, text=True, env=env
        )
        load.append(p)
    for p in load:
        if p.stdout is None or p.stdout.readline().strip() != "ready":
            stop_load(load)
            raise RuntimeError("a load process failed to start")
    time.sleep(0.5)  # let the scheduler spread them
    return load


def stop_load(load: list[subprocess.Popen]) -> None:
    for p in load:
        p.terminate()
    for p in load:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def runnable_tasks() -> int:
    """Tasks running or ready to run on the whole machine now (the 4th field of /proc/loadavg; -1 if unknown)."""
    try:
        return int(Path("/proc/loadavg").read_text().split()[3].split("/")[0])
    except (OSError, IndexError, ValueError):
        return -1


def time_updates(trainer: RAMTrainer, threads: int, seconds: float, warmup: int) -> tuple[list[float], list[int]]:
    """Per-update wall times (s) of ``trainer._update`` on ``threads`` threads for about ``seconds``, and the number
    of runnable tasks on the machine sampled after each update."""
    set_threads(threads)
    for _ in range(warmup):
        trainer.update()
    times: list[float] = []
    tasks: list[int] = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 3:
        t0 = time.perf_counter()
        trainer.update()
        times.append(time.perf_counter() - t0)
        tasks.append(runnable_tasks())
    return times, tasks


def summarise(times: list[float], tasks: list[int]) -> dict[str, float]:
    ms = 1e3 * np.asarray(times)
    return {
        "updates": int(ms.size),
        "mean_ms": float(ms.mean()),
        "median_ms": float(np.median(ms)),
        "p90_ms": float(np.percentile(ms, 90)),
        "max_ms": float(ms.max()),
        # including this benchmark's own thread(s) and the load processes
        "mean_runnable_tasks": float(np.mean(tasks)),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="RAM/MNIST-v0", help="registered environment id")
    parser.add_argument("--batch", type=int, default=128, help="images per update")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts to time")
    parser.add_argument("--seconds", type=float, default=3.0, help="timing window per case and round")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds over all cases")
    parser.add_argument("--warmup", type=int, default=3, help="untimed updates before each window")
    parser.add_argument("--load-procs", type=int, default=1, help="busy processes started for the loaded cases")
    parser.add_argument("--load-threads", type=int, default=1, help="torch threads of each load process")
    parser.add_argument("--json", default="results/bench_threads_cpu.json", help="write the figures here")
    args = parser.parse_args(argv)

    config_threads = max(args.threads)
    set_threads(config_threads)
    header = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "arguments": vars(args),
        "hardware": {"cpu": cpu_model(), "logical_cpus": os.cpu_count(), "machine": platform.machine()},
        "torch": torch.__version__,
        "load_average_at_start": os.getloadavg(),
        "env": args.env,
    }
    print(json.dumps(header))
    cases = [(c, n) for c in ("idle", "loaded") for n in args.threads]
    times: dict[tuple[str, int], list[float]] = {case: [] for case in cases}
    tasks: dict[tuple[str, int], list[int]] = {case: [] for case in cases}
    with tempfile.TemporaryDirectory(prefix="bench_threads_") as tmp:
        config = resolve_config(
            {"env": args.env, "batch_size": args.batch, "device": "cpu", "output": str(Path(tmp) / "run")}
        )
        trainer = RAMTrainer(config, progress=False)
        try:
            for _ in range(args.rounds):
                for condition in ("idle", "loaded"):
                    load = start_load(args.load_procs, args.load_threads) if condition == "loaded" else []
                    try:
                        for n in args.threads:
                            t, r = time_updates(trainer, n, args.seconds, args.warmup)
                            times[(condition, n)] += t
                            tasks[(condition, n)] += r
                    finally:
                        stop_load(load)
        finally:
            if trainer.writer is not None:
                trainer.writer.close()
    header["load_average_at_end"] = os.getloadavg()
    rows = []
    for condition, n in cases:
        row = {"condition": condition, "threads": n, **summarise(times[(condition, n)], tasks[(condition, n)])}
        rows.append(row)
        print(
            f"{condition:6s} threads {n}: {row['median_ms']:8.1f} ms/update median, {row['mean_ms']:8.1f} mean, "
            f"{row['p90_ms']:8.1f} p90 ({row['updates']} updates, {row['mean_runnable_tasks']:.1f} runnable tasks)"
        )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        with open(args.json, "w") as handle:
            json.dump({**header, "rows": rows}, handle, indent=2)
            handle.write("\n")


if __name__ == "__main__":
    main()
