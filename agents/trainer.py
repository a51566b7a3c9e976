"""Training the RAM agent with the hybrid loss against the batched vector environment.

:func:`train` is what ``train_agent.py --algo ram`` runs: Adam with the seed implementation's step decay and gradient
clipping, a validation pass after each epoch, ``best.pt`` (lowest validation error with mean locations) and
``last.pt`` checkpoints, exact ``--resume``, a progress bar, TensorBoard logs and ``config.json`` / ``history.jsonl``
in the run directory.

Reproducibility: the environment (with autoreset off) and the location noise are reseeded before every update from
``(seed, update, rank)``, so the batch of an update depends on nothing else: a run resumed from any checkpoint
(every ``--checkpoint-every`` updates, each epoch, on SIGINT/SIGTERM, at the time limit) replays the rest exactly as
the uninterrupted run does (bit for bit on CPU; see the README on GPU determinism).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import shutil
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import gymnasium as gym
import numpy as np
import torch
import torch.distributed as dist
from gymnasium import spaces
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

import ram_env  # noqa: F401 - registers the environment ids
from agents.checkpoint import load_checkpoint, save_checkpoint
from agents.config import TrainConfig, TrainingInterrupted, UserError, parse_env_args
from agents.evaluation import evaluate_model
from agents.ram import RecurrentAttentionModel
from agents.rollout import EpisodeRunner, hybrid_loss
from ram_env.seeding import stream_seed
from ram_env.task import TaskConfig
from ram_env.vector import GlimpseVectorEnv


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu. Resolved once, at the entry point."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but torch sees no CUDA device; use --device cpu or auto")
    return torch.device(name)


def set_seed(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators (weight initialisation uses torch's)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - seeds the legacy global generator third-party code may use
    torch.manual_seed(seed)


def env_kwargs_for(config: TrainConfig) -> dict[str, Any]:
    """The registered defaults of ``config.env`` with the run's overrides."""
    try:
        spec = gym.spec(config.env)
    except gym.error.Error as err:
        known = ", ".join(ram_env.BENCHMARKS)
        raise UserError(f"unknown environment id {config.env!r} ({err}); registered ids: {known}") from None
    kwargs = {**spec.kwargs, **parse_env_args(config.env_args)}
    if config.glimpses is not None:
        kwargs["glimpses"] = config.glimpses
    kwargs.pop("split", None)  # the trainer picks the split
    try:
        TaskConfig.from_kwargs(**kwargs)
    except (TypeError, ValueError) as err:
        raise UserError(f"bad environment arguments for {config.env}: {err}") from None
    return kwargs


def default_run_dir(config: TrainConfig) -> Path:
    name = config.env.replace("/", "-")
    tag = config.preset or config.algo
    return Path("runs") / f"{name}__{tag}__{config.seed}__{time.strftime('%Y%m%d-%H%M%S')}"


def prepare_run_dir(path: Path, *, overwrite: bool) -> Path:
    """Create the run directory; refuse one that holds another run unless ``overwrite``."""
    if path.exists() and not path.is_dir():
        raise UserError(f"--output {path} is a file; give a directory")
    taken = path.is_dir() and any((path / n).exists() for n in ("config.json", "last.pt", "best.pt"))
    if taken and not overwrite:
        raise UserError(
            f"--output {path} already holds a run; pass --resume {path} to continue it or --overwrite to replace it"
        )
    if taken:
        for name in ("config.json", "last.pt", "best.pt", "history.jsonl", "tb"):
            target = path / name
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)
    path.mkdir(parents=True, exist_ok=True)
    return path


def load_resume_state(config: TrainConfig, algo: str) -> tuple[dict[str, Any], TrainConfig, Path]:
    """Load the checkpoint named by ``--resume`` and check it fits ``--algo`` and ``--env``.

    :return: the checkpoint, the run's saved config and its run directory.
    """
    assert config.resume is not None, "load_resume_state is for runs started with --resume"
    state = load_checkpoint(config.resume)
    if state["algo"] != algo:
        raise UserError(f"{config.resume} is a {state['algo']} checkpoint; resume it with --algo {state['algo']}")
    saved = TrainConfig(**state["config"])
    if config.env != saved.env and config.env != TrainConfig.env:
        raise UserError(f"--env {config.env} conflicts with the checkpoint's env {saved.env}; drop --env to resume")
    run_dir = Path(config.resume)
    return state, saved, run_dir if run_dir.is_dir() else run_dir.parent


def lr_factor(step: int, config: TrainConfig) -> float:
    """Staircase decay: ``lr_decay ** (step // lr_decay_steps)``."""
    return config.lr_decay ** (step // config.lr_decay_steps)


def build_model(env: GlimpseVectorEnv, config: TrainConfig) -> RecurrentAttentionModel:
    glimpse_shape = cast(spaces.Box, env.single_observation_space["glimpse"]).shape
    return RecurrentAttentionModel(glimpse_shape, env.task.n_classes, config.ram_config())


class _Interrupt:
    """Turns SIGINT/SIGTERM into a flag the training loop checks after each update (then checkpoints and stops)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _Interrupt:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


@dataclass
class _Dist:
    """Where this process stands in a ``torchrun`` job (world of one without it)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environment(cls) -> _Dist:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        return cls(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every process if ``flag`` is true on any (so all stop at the same update)."""
        if self.world == 1:
            return flag
        t = torch.tensor([float(flag)], device=device)
        dist.all_reduce(t)
        return bool(t.item() > 0)


class RAMTrainer:
    """One training run of the RAM agent: set up in ``__init__`` (nothing on disk changes if that fails), then
    :meth:`run`.

    Under ``torchrun`` each process trains on its own shard of episodes (``batch_size / world`` images per update,
    seeded by its rank) with ``DistributedDataParallel`` averaging the gradients; process 0 validates and writes
    the checkpoints and logs.
    """

    def __init__(self, config: TrainConfig, *, progress: bool = True):
        self.ddp = ddp = _Dist.from_environment()
        self.progress = progress
        state: dict[str, Any] | None = None
        if config.resume is not None:
            state, saved, run_dir = load_resume_state(config, "ram")
            # The saved run's settings win; only the length of the run may change.
            config = dataclasses.replace(
                saved, epochs=config.epochs, resume=config.resume, time_limit=config.time_limit
            )
        else:
            run_dir = Path(config.output) if config.output else default_run_dir(config)
        self.config, self.run_dir = config, run_dir
        # Everything a user can get wrong (device, environment arguments, data files) fails before the run
        # directory is touched, so a failed start creates, overwrites or deletes nothing.
        device = resolve_device(config.device)
        if ddp.world > 1:
            if config.batch_size % ddp.world:
                raise UserError(f"--batch-size {config.batch_size} must be a multiple of the {ddp.world} processes")
            if device.type == "cuda":
                device = torch.device("cuda", ddp.local_rank)
                torch.cuda.set_device(device)
        self.device = device
        self.env_kwargs = env_kwargs_for(config)
        self.val_kwargs = {**self.env_kwargs, "split": "validation"}
        train_env = GlimpseVectorEnv(
            config.batch_size // ddp.world * config.mc_samples,
            device=device,
            mc_samples=config.mc_samples,
            autoreset=False,
            **{**self.env_kwargs, "split": "train"},
        )
        if ddp.is_main:
            if state is None:
                prepare_run_dir(run_dir, overwrite=config.overwrite)
            else:  # temporary files of a checkpoint write that was killed (SIGKILL, power loss) before its rename
                for stale in run_dir.glob(".*.pt.*.tmp"):
                    stale.unlink(missing_ok=True)
                # An epoch logged after the checkpoint was written is run again: keep history.jsonl in step with it.
                (run_dir / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in state["history"]))
        if ddp.world > 1:
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        set_seed(config.seed)
        self.model = build_model(train_env, config).to(device)
        self.agent = DistributedDataParallel(self.model) if ddp.world > 1 else self.model
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.learning_rate, fused=True)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: lr_factor(step, config))
        self.global_step, self.history, self.best_val, elapsed = 0, [], math.inf, 0.0
        if state is not None:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.global_step, self.history = state["global_step"], state["history"]
            self.best_val, elapsed = state["best_val"], state["wall_time"]
        self.steps_per_epoch = math.ceil((config.epoch_images or len(train_env.task.data)) / config.batch_size)
        self.runner = EpisodeRunner(train_env, start=False)  # restarted with the update's seed before each batch
        self.noise = torch.Generator(device=device)
        self.writer = None
        if ddp.is_main:
            (run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2) + "\n")
            from torch.utils.tensorboard import SummaryWriter  # imported here: tensorboard is slow to import

            self.writer = SummaryWriter(str(run_dir / "tb"), purge_step=self.global_step if state else None)
            self.writer.add_text("config", json.dumps(dataclasses.asdict(config), indent=2))
        self.start = time.perf_counter() - elapsed  # the run's wall clock, counting earlier sessions

    def run(self) -> dict[str, Any]:
        """Train to ``epochs`` (or the time limit, or SIGINT); returns the summary (also in ``summary.json``)."""
        config, ddp = self.config, self.ddp
        total_steps = config.epochs * self.steps_per_epoch
        checkpoint_every = config.checkpoint_every or self.steps_per_epoch
        deadline = None if config.time_limit is None else self.start + 60 * config.time_limit
        stop_reason = None
        bar = tqdm(
            total=total_steps,
            initial=self.global_step,
            disable=not (self.progress and ddp.is_main),
            unit="update",
            smoothing=0.05,
        )
        with _Interrupt() as interrupt:
            while self.global_step < total_steps:
                stats, traj = self._update()
                bar.update(1)
                if self.writer is not None and self.global_step % 50 == 0:
                    _log_step(self.writer, stats, traj, self.scheduler.get_last_lr()[0], self.global_step)
                    bar.set_postfix(loss=f"{stats['losses/total']:.3f}", acc=f"{stats['charts/accuracy']:.3f}")
                if self.global_step % self.steps_per_epoch == 0:
                    self._end_of_epoch()
                elif self.global_step % checkpoint_every == 0 and ddp.is_main:
                    self._checkpoint()
                late = deadline is not None and time.perf_counter() > deadline
                if ddp.any(interrupt.requested or late, self.device):
                    stop_reason = "interrupted" if interrupt.requested else "time limit"
                    if ddp.is_main:
                        self._checkpoint()
                    break
        bar.close()
        if self.writer is not None:
            self.writer.close()
        summary = {
            "run_dir": str(self.run_dir),
            "epochs": self.global_step // self.steps_per_epoch,
            "steps": self.global_step,
            "wall_time": round(time.perf_counter() - self.start, 2),
            "best_val_error_mean_location": self.best_val,
            "stopped": stop_reason,
            "device": str(self.device),
            "processes": ddp.world,
        }
        if ddp.is_main:
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        if ddp.world > 1:
            dist.barrier()
            dist.destroy_process_group()
        if stop_reason == "interrupted":
            raise TrainingInterrupted(self.run_dir / "last.pt")
        return summary

    def _update(self) -> tuple[dict[str, torch.Tensor], Any]:
        """One update: a fresh batch seeded by (seed, update, rank), the hybrid loss, a clipped Adam step."""
        config, rank = self.config, self.ddp.rank
        self.model.train()
        # The batch of every update is a function of (seed, update, rank) alone: exact resume at any update.
        self.runner.restart(seed=stream_seed(config.seed, "train/env", self.global_step, rank))
        self.noise.manual_seed(stream_seed(config.seed, "train/noise", self.global_step, rank))
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=config.precision == "bf16"):
            traj = self.agent(self.runner, generator=self.noise)
        loss, stats = hybrid_loss(traj)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.global_step += 1
        return stats, traj

    def _checkpoint(self, *, best: bool = False) -> None:
        payload = {
            "algo": "ram",
            "env_id": self.config.env,
            "env_kwargs": self.env_kwargs,
            "config": dataclasses.asdict(self.config),
            "model_args": self.model.model_args(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.global_step // self.steps_per_epoch,
            "global_step": self.global_step,
            "history": self.history,
            "wall_time": time.perf_counter() - self.start,
            "best_val": self.best_val,
        }
        if best:
            save_checkpoint(payload, self.run_dir / "best.pt")
        save_checkpoint(payload, self.run_dir / "last.pt")

    def _end_of_epoch(self) -> None:
        """Validate (process 0), log, and write last.pt (and best.pt on a new best)."""
        if self.ddp.is_main:
            config = self.config
            train_time = time.perf_counter() - self.start
            result = evaluate_model(
                self.model, self.val_kwargs, device=self.device, mc_samples=config.eval_mc_samples, seed=config.seed
            )
            record = {
                "epoch": self.global_step // self.steps_per_epoch,
                "step": self.global_step,
                "images": self.global_step * config.batch_size,
                "wall_time": round(time.perf_counter() - self.start, 2),
                "train_time": round(train_time, 2),
                "val_error_sampled": result.error_sampled,
                "val_error_mean_location": result.error_mean_location,
                "val_error_monte_carlo": result.error_monte_carlo,
            }
            self.history.append(record)
            assert self.writer is not None  # process 0 writes the logs
            for key in ("val_error_sampled", "val_error_mean_location", "val_error_monte_carlo"):
                self.writer.add_scalar(f"eval/{key}", record[key], self.global_step)
            with open(self.run_dir / "history.jsonl", "a") as handle:
                handle.write(json.dumps(record) + "\n")
            improved = result.error_mean_location < self.best_val
            self.best_val = min(self.best_val, result.error_mean_location)
            self._checkpoint(best=improved)
            if self.progress:
                tqdm.write(
                    f"epoch {record['epoch']}: val error {result.error_mean_location:.2f}% (mean locations), "
                    f"{result.error_sampled:.2f}% (sampled), {record['wall_time'] / 60:.1f} min"
                )
        if self.ddp.world > 1:
            dist.barrier()


def train(config: TrainConfig, *, progress: bool = True) -> dict[str, Any]:
    """Train (or resume) a RAM agent; returns the final summary (also in ``summary.json``)."""
    return RAMTrainer(config, progress=progress).run()


def _log_step(writer, stats: dict[str, torch.Tensor], traj, lr: float | torch.Tensor, step: int) -> None:
    for key, value in stats.items():
        writer.add_scalar(key, float(value), step)
    loc = traj.locations[:, 1:]  # (N, T-1, 2) chosen locations (the first one is the env's)
    if loc.numel():
        writer.add_scalar("locations/mean_x", float(loc[..., 0].mean()), step)
        writer.add_scalar("locations/mean_y", float(loc[..., 1].mean()), step)
        writer.add_scalar("locations/spread", float(loc.std(dim=0).mean()), step)
        writer.add_scalar("locations/at_border", float((loc.abs() > 0.99).float().mean()), step)
    writer.add_scalar("charts/learning_rate", lr, step)
