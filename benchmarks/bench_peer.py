"""Training throughput of the public PyTorch RAM (kevinzakka/recurrent-visual-attention) beside this project's, in
one process on one machine.

Usage::

    git clone https://github.com/kevinzakka/recurrent-visual-attention /tmp/peer   # outside this project
    python benchmarks/bench_peer.py --peer /tmp/peer --json results/bench_peer_cpu.json
    python benchmarks/bench_peer.py --peer /tmp/peer --threads 1 2 --batches 100   # shorter, two thread counts

The peer is timed by its own ``Trainer.train_one_epoch`` (its ``trainer.py``) with its ``config.py`` defaults (6
glimpses of one 8 x 8 patch, hidden sizes 128 / 256, std 0.05, Adam at 3e-4, batch 128, M = 1), on the CPU, on the
real MNIST training images: the first 50,000 of the training file (this project's train split), read with
``ram_env.datasets.load_dataset``, converted per image as its ``ToTensor()`` then ``Normalize((0.1307,), (0.3081,))``
would, batched by a ``torch.utils.data.DataLoader`` with a ``SubsetRandomSampler`` (the peer's ``Trainer`` reads
``len(train_loader.sampler.indices)``). Its ``data_loader.py`` is not imported (it needs torchvision); its
``tensorboard_logger`` import is stubbed when that package is missing (logging is off by default anyway). The loader
runs in the main process (``--peer-workers 0``) so both sides do their data work on the same ``--threads``; the
peer's ``main.py`` would start 1 (``use_gpu`` True) or 4 (``use_gpu`` False) worker processes. Its progress bar is
kept but written to a null stream; the glimpse pickles it dumps on an epoch's first batch go to a temporary folder.

This project is timed by ``agents.trainer.RAMTrainer.update`` on ``RAM/MNIST-v0`` (the same 6 x 8 x 8, 1 scale
task), batch 128, M = 1, fp32, exactly as ``benchmarks/bench_train.py`` times it (its ``bench`` function: a fixed
time window after 10 warm-up updates). The two measurements alternate (peer, ours, peer, ours, ...) so that a change
in the machine's load affects both; the load average is recorded before and after every measurement.

Each of our measurements also probes the matrix-product rate at the model's largest layer (``bench_train.add_floor``),
and each thread count a 1024^3 product: the summary's ``ratio_ceiling`` is the ratio that an update consisting of its
matrix products alone would reach, the most that cutting overhead can ever give at this batch size and precision.
``ratio_ceiling_sequence`` is the same ceiling with the products timed one by one at their own shapes, in an
update's order (:func:`matmul_sequence`).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import io
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, SubsetRandomSampler

from agents.runs import git_commit, hardware_name

try:
    from benchmarks.bench_train import add_floor, bench, peak_gflops
except ModuleNotFoundError:  # run as ``python benchmarks/bench_peer.py``: its own folder is on the path, not the root
    from bench_train import add_floor, bench, peak_gflops  # type: ignore[no-redef]
from agents.config import resolve_config
from agents.trainer import RAMTrainer
from ram_env.datasets import load_dataset

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # the peer's transforms.Normalize((0.1307,), (0.3081,))


class NormalizedMNIST(Dataset):
    """MNIST images as the peer's torchvision transform yields them: ``(1, 28, 28)`` float32, ``x / 255`` then
    ``(x - 0.1307) / 0.3081``, converted one image at a time in ``__getitem__`` (as torchvision's MNIST does)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images = torch.from_numpy(np.array(images))  # (N, 1, 28, 28) uint8, a writable copy
        self.labels = torch.from_numpy(np.array(labels, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x = self.images[index].float().div_(255.0)
        return x.sub_(MNIST_MEAN).div_(MNIST_STD), int(self.labels[index])


class FirstBatches:
    """The first ``n`` batches of a loader (all of them when ``n`` is None), keeping its ``sampler`` and ``dataset``
    so that the peer's ``Trainer`` can read ``sampler.indices``."""

    def __init__(self, loader: DataLoader, n: int | None) -> None:
        self.loader, self.sampler, self.dataset = loader, loader.sampler, loader.dataset
        self.n = len(loader) if n is None else min(n, len(loader))
        self.images = 0  # images yielded by the last iteration

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.images = 0
        for x, y in itertools.islice(self.loader, self.n):
            self.images += len(y)
            yield x, y


def peer_train_loader(batch: int, seed: int, workers: int) -> DataLoader:
    """The real MNIST training split (first 50,000 images of the training file), shuffled by a
    ``SubsetRandomSampler`` over all of its indices, batched as the peer's ``get_train_valid_loader`` does."""
    train = load_dataset("mnist", "train")
    dataset = NormalizedMNIST(train.images, train.labels)
    generator = torch.Generator().manual_seed(seed)
    sampler = SubsetRandomSampler(list(range(len(dataset))), generator=generator)
    return DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=workers)


def import_peer(path: Path) -> tuple[types.ModuleType, types.ModuleType]:
    """Import the peer's ``config`` and ``trainer`` modules from its checkout, stubbing ``tensorboard_logger`` when
    it is not installed."""
    try:
        importlib.import_module("tensorboard_logger")
    except ImportError:
        stub = types.ModuleType("tensorboard_logger")
        stub.configure = lambda *args, **kwargs: None  # type: ignore[attr-defined]
        stub.log_value = lambda *args, **kwargs: None  # type: ignore[attr-defined]
        sys.modules["tensorboard_logger"] = stub
    sys.path.insert(0, str(path))
    try:
        return importlib.import_module("config"), importlib.import_module("trainer")
    finally:
        sys.path.remove(str(path))


def peer_commit(path: Path) -> str | None:
    """The checkout's commit, or None when it is not a git checkout."""
    try:
        result = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True)
    except OSError:
        return None
    return result.stdout.strip() if result.returncode == 0 else None


@contextlib.contextmanager
def working_directory(path: Path) -> Iterator[None]:
    """Run the block in ``path`` (``contextlib.chdir`` needs Python 3.11)."""
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


class PeerBench:
    """The peer's ``Trainer`` with its default config on the CPU, built once and trained epoch after epoch."""

    def __init__(self, path: Path, batches: int | None, warmup: int, workers: int, workdir: Path) -> None:
        peer_config, peer_trainer = import_peer(path)
        config = peer_config.parser.parse_args([])  # config.py's defaults
        config.use_gpu = False
        config.is_train = True
        self.config = config
        self.workdir = workdir
        torch.manual_seed(config.random_seed)  # as its main.py does
        loader = peer_train_loader(config.batch_size, config.random_seed, workers)
        self.timed, self.warm = FirstBatches(loader, batches), FirstBatches(loader, warmup)
        with working_directory(workdir):  # its Trainer creates ./plots/<model>/ and dumps glimpses there
            # Validation is not timed (train_one_epoch only); the loader is passed to fill the (train, valid) pair.
            self.trainer = peer_trainer.Trainer(config, (self.warm, self.warm))
        self.epoch = 0

    def _epoch(self, loader: FirstBatches) -> float:
        self.trainer.train_loader = loader
        with working_directory(self.workdir), contextlib.redirect_stderr(io.StringIO()):
            start = time.perf_counter()
            self.trainer.train_one_epoch(self.epoch)
            elapsed = time.perf_counter() - start
        self.epoch += 1
        return elapsed

    def measure(self) -> dict[str, Any]:
        """A warm-up of ``warmup`` batches, then the timed batches by ``Trainer.train_one_epoch``."""
        self._epoch(self.warm)
        elapsed = self._epoch(self.timed)
        return {
            "batch": self.config.batch_size,
            "batches": len(self.timed),
            "images": self.timed.images,
            "seconds": elapsed,
            "images_per_s": self.timed.images / elapsed,
            "ms_per_batch": 1e3 * elapsed / len(self.timed),
        }


def ours(env: str, batch: int, seconds: float) -> dict[str, Any]:
    """This project's ``RAMTrainer.update`` at batch ``batch``, M = 1, fp32, timed by ``bench_train.bench``."""
    start = time.perf_counter()
    row = bench(env, batch, 1, torch.device("cpu"), seconds, "fp32")
    row["seconds"] = time.perf_counter() - start  # wall time of the call, including bench's env-only timing
    add_floor(row, torch.device("cpu"))  # the update's matrix products alone, at the rate probed now
    keys = ("batch", "mc_samples", "precision", "images_per_s", "ms_per_update", "seconds", "env_ms_per_update")
    keys += ("gemm_shape", "gemm_gflops", "floor_ms_per_update", "share_of_floor")
    return {k: row[k] for k in keys}


def matmul_sequence(env: str, batch: int, repeats: int = 30) -> dict[str, Any]:
    """The matrix products of one of our updates and nothing else, timed as a bare sequence of ``torch.mm`` calls.

    For each ``Linear`` of the model (the trainer's, for ``env``): T forward products ``(B, in) @ (in, out)``, then T
    weight-gradient products ``(out, B) @ (B, in)`` and T input-gradient products ``(B, out) @ (out, in)``, on random
    tensors allocated beforehand (T = the glimpses; every layer is counted at every step and with an input gradient,
    a slight overcount: the classifier runs once, and the first glimpse layers need no input gradient). Unlike
    ``floor_ms_per_update`` (all FLOPs at one probed shape's rate) this runs each product at its own shape and in the
    update's order; it is what an update with no overhead at all would cost. Median of ``repeats``.
    """
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = RAMTrainer(resolve_config({"env": env, "batch_size": batch, "device": "cpu", "output": run_dir}))
        layers = [m for m in trainer.model.modules() if isinstance(m, torch.nn.Linear)]
        glimpses = trainer.runner.env.config.glimpses
        trainer.close()
    weights = [torch.randn(m.out_features, m.in_features) for m in layers]
    inputs = [[torch.randn(batch, m.in_features) for _ in range(glimpses)] for m in layers]
    grads = [[torch.randn(batch, m.out_features) for _ in range(glimpses)] for m in layers]

    def sequence() -> None:
        for t in range(glimpses):
            for w, x in zip(weights, inputs, strict=True):
                torch.mm(x[t], w.t())
        for t in reversed(range(glimpses)):
            for w, x, g in zip(weights, inputs, grads, strict=True):
                torch.mm(g[t].t(), x[t])
                torch.mm(g[t], w)

    sequence()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        sequence()
        samples.append(time.perf_counter() - start)
    seconds = float(np.median(samples))
    return {"ms_per_update": 1e3 * seconds, "images_per_s": batch / seconds, "layers": len(layers)}


def run_threads(args: argparse.Namespace, threads: int, workdir: Path) -> dict[str, Any]:
    """Alternate ``args.repeats`` peer and ours measurements with ``threads`` intra-op threads."""
    torch.set_num_threads(threads)
    peer = PeerBench(args.peer, args.batches, args.warmup, args.peer_workers, workdir / f"threads{threads}")
    measurements: list[dict[str, Any]] = []
    for repeat in range(args.repeats):
        for name in ("peer", "ours"):
            load_before = os.getloadavg()
            row = peer.measure() if name == "peer" else ours(args.env, args.batch, args.seconds)
            row.update(
                implementation=name,
                repeat=repeat,
                threads=torch.get_num_threads(),
                load_average_before=list(load_before),
                load_average_after=list(os.getloadavg()),
            )
            measurements.append(row)
            print(
                f"threads {threads} repeat {repeat} {name:4s}: {row['images_per_s']:8.0f} images/s "
                f"({row['seconds']:.1f} s), load average {load_before[0]:.2f} -> {row['load_average_after'][0]:.2f}",
                flush=True,
            )
    summary = summarise(measurements, threads, peak_gflops(torch.device("cpu")))
    sequence = matmul_sequence(args.env, args.batch)
    summary["matmul_sequence"] = sequence
    summary["ratio_ceiling_sequence"] = sequence["images_per_s"] / summary["peer_images_per_s"]
    print(
        f"threads {threads}: peer {summary['peer_images_per_s']:.0f} images/s, ours {summary['ours_images_per_s']:.0f}"
        f" images/s (medians), ours / peer = {summary['ratio_ours_over_peer']:.2f}; our matrix products alone "
        f"({summary['gemm_gflops']:.0f} GFLOP/s at the core's shape, {summary['peak_gflops']:.0f} at 1024^3) would "
        f"run {summary['floor_images_per_s']:.0f} images/s, {summary['ratio_ceiling']:.2f} x the peer; timed as a "
        f"sequence at their own shapes {sequence['images_per_s']:.0f} images/s, "
        f"{summary['ratio_ceiling_sequence']:.2f} x the peer",
        flush=True,
    )
    return {"summary": summary, "measurements": measurements}


def summarise(measurements: list[dict[str, Any]], threads: int, peak: float) -> dict[str, Any]:
    """Medians of the alternating measurements, and the ratio's ceiling.

    ``ratio_ceiling`` is the ratio an update with no overhead at all would reach: our update's matrix-product FLOPs
    at the matrix-product rate probed beside it (``floor_images_per_s``, see ``bench_train.add_floor``) over the
    peer's median. Next to ``peak_gflops`` (a 1024^3 product on the same threads) it tells whether the small products
    of batch 128 run below the hardware's rate (``gemm_gflops`` well under ``peak_gflops``) or at it.
    """
    peer = [m for m in measurements if m["implementation"] == "peer"]
    ours = [m for m in measurements if m["implementation"] == "ours"]
    peer_rates = [m["images_per_s"] for m in peer]
    our_rates = [m["images_per_s"] for m in ours]
    summary: dict[str, Any] = {
        "threads": threads,
        "peer_images_per_s": float(np.median(peer_rates)),
        "ours_images_per_s": float(np.median(our_rates)),
        "ratio_per_repeat": [o / p for o, p in zip(our_rates, peer_rates, strict=True)],
        "gemm_gflops": float(np.median([m["gemm_gflops"] for m in ours])),
        "peak_gflops": peak,
        "floor_images_per_s": float(np.median([m["batch"] / m["floor_ms_per_update"] * 1e3 for m in ours])),
    }
    summary["ratio_ours_over_peer"] = summary["ours_images_per_s"] / summary["peer_images_per_s"]
    summary["ratio_ceiling"] = summary["floor_images_per_s"] / summary["peer_images_per_s"]
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peer", type=Path, required=True, help="a checkout of kevinzakka/recurrent-visual-attention")
    parser.add_argument("--threads", type=int, nargs="+", default=[1], help="torch.set_num_threads, one run each")
    parser.add_argument("--repeats", type=int, default=2, help="alternating peer / ours pairs per thread count")
    parser.add_argument("--batches", type=int, help="peer batches timed per measurement (default: a whole epoch)")
    parser.add_argument("--warmup", type=int, default=10, help="peer batches run before each timed epoch")
    parser.add_argument("--peer-workers", type=int, default=0, help="DataLoader worker processes for the peer")
    parser.add_argument("--env", default="RAM/MNIST-v0")
    parser.add_argument("--batch", type=int, default=128, help="our batch (the peer's is its config's, 128)")
    parser.add_argument("--seconds", type=float, default=10.0, help="our timing window per measurement")
    parser.add_argument("--note", default="", help="free text stored in the JSON (e.g. what else loads the machine)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    args.peer = args.peer.expanduser().resolve()
    header: dict[str, Any] = {
        "date": datetime.date.today().isoformat(),
        "device": hardware_name(torch.device("cpu")),
        "torch": str(torch.__version__),
        "git_commit": git_commit(),  # of our code timed
        "arguments": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "peer": "kevinzakka/recurrent-visual-attention",
        "peer_commit": peer_commit(args.peer),
        "note": args.note,
        "load_average_before": list(os.getloadavg()),
    }
    print(json.dumps(header), flush=True)
    runs = []
    with tempfile.TemporaryDirectory() as workdir:
        for threads in args.threads:
            (Path(workdir) / f"threads{threads}").mkdir()
            runs.append(run_threads(args, threads, Path(workdir)))
    header["load_average_after"] = list(os.getloadavg())
    if args.json:
        args.json.write_text(json.dumps({**header, "runs": runs}, indent=2) + "\n")


if __name__ == "__main__":
    main()
