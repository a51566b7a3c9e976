"""Throughput of the glimpse environments and cost of the glimpse sensor against a memory-traffic floor.

Usage::

    python benchmarks/bench_env.py                                  # RAM/ClutteredMNIST60-v0 on CPU
    python benchmarks/bench_env.py --env RAM/MNIST-v0 --device cuda --json out.json

Prints, for the chosen id:

* env steps/s of the batched vector env (``gym.make_vec(..., vectorization_mode="vector_entry_point")``)
  at N = 1, 64, 1024, 8192, with pre-generated random tensor actions and whole episodes (autoresets
  included), after a warm-up episode;
* env steps/s of gymnasium's ``SyncVectorEnv`` over the single env at N = 64, and the ratio
  vector(1024) / sync(64);
* the sensor's time per batch of 1024 canvases: (a) building the summed-area table, (b) reading one glimpse
  from it, (c) the full ``glimpse_torch``, each against the floor = time to clone the float32 pixels the
  glimpse covers (1024 * sum_i (g s^i)^2 elements); ``read_over_floor`` is (b) / floor with the two timed back to
  back in each of 9 repeats (median of the ratios), the figure to quote on a loaded machine;
* resident memory (VmRSS) before and after creating (and resetting) an N = 8192 vector env, against the data
  set.

Timings on a shared machine are only as good as its load: the load average is printed with them.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

import ram_env  # noqa: F401  (registers the ids)
from agents.runs import git_commit, write_json
from agents.threads import set_threads
from ram_env.sensor import glimpse_from_integral, glimpse_torch, integral_image

VECTOR_SIZES = (1, 64, 1024, 8192)
SYNC_SIZE = 64
SENSOR_BATCH = 1024


def rss_mib() -> float:
    """Resident set size of this process in MiB (VmRSS of /proc/self/status)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device, repeats: int = 7, min_time: float = 0.05) -> float:
    """Median seconds of one call of ``fn`` (each sample loops until ``min_time`` has passed)."""
    fn()
    _sync(device)
    samples = []
    for _ in range(repeats):
        calls = 0
        start = time.perf_counter()
        while True:
            fn()
            calls += 1
            _sync(device)
            elapsed = time.perf_counter() - start
            if elapsed >= min_time:
                break
        samples.append(elapsed / calls)
    return statistics.median(samples)


def paired_ratio(fn: Callable[[], object], floor: Callable[[], object], device: torch.device, repeats: int = 9):
    """Median over ``repeats`` of ``time(fn) / time(floor)``, the two timed back to back in each repeat, so that both
    see the same load on a shared machine (a ratio of two separately taken medians mixes two moments' loads)."""
    return statistics.median(
        time_call(fn, device, repeats=1) / time_call(floor, device, repeats=1) for _ in range(repeats)
    )


def bench_vector(env_id: str, num_envs: int, steps: int, device: torch.device) -> float:
    """Env steps per second of the vector env (``num_envs`` * vector steps / s), whole episodes only."""
    envs = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", device=str(device))
    glimpses = envs.config.glimpses
    steps = max(glimpses, math.ceil(steps / glimpses) * glimpses)
    gen = torch.Generator(device=device).manual_seed(0)
    n_classes = envs.task.n_classes
    actions = [
        {
            "location": torch.rand(num_envs, 2, generator=gen, device=device) * 2 - 1,
            "label": torch.randint(0, n_classes, (num_envs,), generator=gen, device=device),
        }
        for _ in range(glimpses)
    ]
    envs.reset(seed=0)
    for t in range(glimpses):  # warm-up: one whole episode, ending in an autoreset
        envs.step(actions[t])
    _sync(device)
    start = time.perf_counter()
    for t in range(steps):
        envs.step(actions[t % glimpses])
    _sync(device)
    elapsed = time.perf_counter() - start
    envs.close()
    return num_envs * steps / elapsed


def bench_sync(env_id: str, num_envs: int, steps: int) -> float:
    """Env steps per second of gymnasium's SyncVectorEnv over the single (numpy) env."""
    envs = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="sync")
    glimpses = envs.envs[0].unwrapped.config.glimpses
    steps = max(glimpses, math.ceil(steps / glimpses) * glimpses)
    envs.action_space.seed(0)
    actions = [envs.action_space.sample() for _ in range(glimpses)]
    envs.reset(seed=0)
    for t in range(glimpses):
        envs.step(actions[t])
    start = time.perf_counter()
    for t in range(steps):
        envs.step(actions[t % glimpses])
    elapsed = time.perf_counter() - start
    envs.close()
    return num_envs * steps / elapsed


def bench_sensor(env_id: str, device: torch.device) -> dict:
    """Sensor times for SENSOR_BATCH canvases of the env's geometry, and the memory-traffic floor."""
    env = gym.make(env_id)
    task = env.unwrapped.task
    spec = task.config.sensor
    gen = torch.Generator(device=device).manual_seed(0)
    canvases = torch.randint(
        0, 256, (SENSOR_BATCH, task.channels, task.canvas_h, task.canvas_w), generator=gen, device=device
    ).to(torch.uint8)
    locations = torch.rand(SENSOR_BATCH, 2, generator=gen, device=device) * 2 - 1
    table = integral_image(canvases)
    covered = SENSOR_BATCH * task.channels * sum(spec.patch_size(i) ** 2 for i in range(spec.num_scales))
    pixels = torch.rand(covered, generator=gen, device=device)  # float32
    t_floor = time_call(lambda: pixels.clone(), device)
    t_table = time_call(lambda: integral_image(canvases), device)
    t_read = time_call(lambda: glimpse_from_integral(table, locations, spec, pixel_scale=1 / 255), device)
    t_full = time_call(
        lambda: glimpse_torch(
            canvases, locations, glimpse_size=spec.glimpse_size, num_scales=spec.num_scales, scale=spec.scale
        ),
        device,
    )
    floor = lambda: pixels.clone()  # noqa: E731
    read_over_floor = paired_ratio(
        lambda: glimpse_from_integral(table, locations, spec, pixel_scale=1 / 255), floor, device
    )
    return {
        "read_over_floor": read_over_floor,
        "geometry": f"{spec.num_scales} x {spec.glimpse_size}x{spec.glimpse_size} (scale {spec.scale}) "
        f"on {task.channels}x{task.canvas_h}x{task.canvas_w}",
        "covered_elements": covered,
        "floor_s": t_floor,
        "table_s": t_table,
        "read_s": t_read,
        "full_s": t_full,
    }


def bench_memory(env_id: str, device: torch.device) -> dict:
    start = rss_mib()
    # a one-env vector env first loads the data set and its shared device copy: what follows is the env alone
    small = gym.make_vec(env_id, num_envs=1, vectorization_mode="vector_entry_point", device=str(device))
    before = rss_mib()
    envs = gym.make_vec(env_id, num_envs=8192, vectorization_mode="vector_entry_point", device=str(device))
    assert envs.images.data_ptr() == small.images.data_ptr(), "the data set was copied"
    created = rss_mib()
    envs.reset(seed=0)
    after_reset = rss_mib()
    data_mib = (envs.task.data.images.nbytes + envs.task.data.labels.nbytes) / 2**20
    state_mib = envs._table.nbytes / 2**20  # the canvases live in their summed-area tables
    envs.close()
    return {
        "rss_start_mib": start,
        "rss_before_mib": before,
        "rss_created_mib": created,
        "rss_after_reset_mib": after_reset,
        "dataset_mib": data_mib,
        "tables_mib": state_mib,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="RAM/ClutteredMNIST60-v0", help="registered id (ram_env: prefix optional)")
    parser.add_argument("--steps", type=int, default=60, help="vector steps timed per size (rounded to episodes)")
    parser.add_argument("--device", default="cpu", help="torch device of the vector env and the sensor")
    parser.add_argument("--json", default=None, help="write the figures to this JSON file")
    parser.add_argument(
        "--threads", default="auto", help="torch CPU threads: N, or auto = $OMP_NUM_THREADS if set, else 1"
    )
    args = parser.parse_args()
    set_threads(args.threads)
    env_id = args.env if args.env.startswith("ram_env:") else f"ram_env:{args.env}"
    device = torch.device(args.device)

    results: dict = {
        "env": env_id,
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "torch": torch.__version__,
        "git_commit": git_commit(),  # of the code timed (the agents package imported)
        "threads": torch.get_num_threads(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "steps": args.steps,
        "load_average": list(os.getloadavg()),
    }
    print(f"env {env_id}")
    print(f"device {results['device']}  torch {results['torch']}  threads {results['threads']}")
    print(f"date {results['date']}")
    print("load average (1, 5, 15 min): " + ", ".join(f"{v:.2f}" for v in results["load_average"]))

    memory = bench_memory(env_id, device)  # first, so the other benchmarks' allocations do not blur it
    results["memory"] = memory

    print("\nvector env (GlimpseVectorEnv), env steps/s")
    results["vector_steps_per_s"] = {}
    for n in VECTOR_SIZES:
        rate = bench_vector(env_id, n, args.steps, device)
        results["vector_steps_per_s"][n] = rate
        print(f"  N = {n:5d}: {rate:14,.0f}")
    sync_rate = bench_sync(env_id, SYNC_SIZE, args.steps)
    results["sync_steps_per_s"] = {SYNC_SIZE: sync_rate}
    ratio = results["vector_steps_per_s"][1024] / sync_rate
    results["vector1024_over_sync64"] = ratio
    print(f"SyncVectorEnv over GlimpseEnv, N = {SYNC_SIZE}: {sync_rate:,.0f} env steps/s")
    print(f"ratio vector(N=1024) / sync(N={SYNC_SIZE}): {ratio:.1f}x")

    sensor = bench_sensor(env_id, device)
    results["sensor"] = sensor
    floor = sensor["floor_s"]
    print(f"\nglimpse sensor, batch of {SENSOR_BATCH}: {sensor['geometry']}")
    print(f"  floor: clone {sensor['covered_elements']:,} float32 : {floor * 1e3:8.3f} ms")
    for key, name in (
        ("table_s", "(a) integral_image       "),
        ("read_s", "(b) glimpse_from_integral"),
        ("full_s", "(c) glimpse_torch        "),
    ):
        print(f"  {name}: {sensor[key] * 1e3:8.3f} ms = {sensor[key] / floor:6.2f} x floor")
    print(f"  (b) / floor, timed back to back (median of 9 pairs): {sensor['read_over_floor']:.2f}")

    print("\nmemory (VmRSS), N = 8192 vector env")
    loaded = memory["rss_before_mib"] - memory["rss_start_mib"]
    print(f"  start           {memory['rss_start_mib']:8.1f} MiB")
    print(f"  data loaded     {memory['rss_before_mib']:8.1f} MiB (+{loaded:.1f}: numpy split + its torch copy)")
    grown = memory["rss_created_mib"] - memory["rss_before_mib"]
    print(f"  after creation  {memory['rss_created_mib']:8.1f} MiB (+{grown:.1f})")
    print(
        f"  after reset     {memory['rss_after_reset_mib']:8.1f} MiB "
        f"(+{memory['rss_after_reset_mib'] - memory['rss_before_mib']:.1f} for the env)"
    )
    print(
        f"  data set (images + labels) {memory['dataset_mib']:.1f} MiB; "
        f"summed-area tables of the canvases {memory['tables_mib']:.1f} MiB"
    )

    results["load_average_end"] = list(os.getloadavg())
    if args.json:
        write_json(Path(args.json), results)
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
