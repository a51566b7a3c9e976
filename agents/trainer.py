"""Training the RAM agent with the hybrid loss against the batched vector environment.

:func:`train` is what ``train_agent.py --algo ram`` runs: Adam with the seed implementation's step decay and gradient
clipping, a validation pass after each epoch, ``best.pt`` (lowest validation error with mean locations) and
``last.pt`` checkpoints, exact ``--resume``, a progress bar, TensorBoard logs and ``config.json`` / ``history.jsonl``
in the run directory.

Reproducibility: the environment (with autoreset off) and the location noise are reseeded before every update from
``(seed, update, rank)``, so the batch of an update depends on nothing else: a run resumed from any checkpoint
(every ``--checkpoint-every`` updates, each epoch, on SIGINT/SIGTERM, at the time limit) replays the rest exactly as
the uninterrupted run does (bit for bit on CPU; see the README on GPU determinism).

CUDA graphs: on a CUDA device (one process) the part of the update that is many small kernels (the environment's
reset, the six glimpse steps of the rollout, the hybrid loss, its backward pass) is captured once as a CUDA graph and
replayed every update, after :data:`GRAPH_WARMUP` eager updates. The two random streams are seeded before each
replay exactly as before an eager update (the graph reads the generators' state when it is replayed), so the
batches are the same. Gradient clipping and the fused Adam step run eagerly after the replay (a few kernels, no host
sync), which keeps the learning-rate schedule, the optimizer state and the checkpoints as they are on the eager path.
Right after the capture, one update is computed both ways and compared; a capture that fails or disagrees is
dropped with a warning and training goes on eagerly.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import torch
import torch.distributed as dist
from gymnasium import spaces
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

import ram_env  # noqa: F401 - registers the environment ids
from agents.checkpoint import save_checkpoint
from agents.config import TrainConfig, TrainingInterrupted, UserError
from agents.evaluation import evaluate_model
from agents.ram import RecurrentAttentionModel
from agents.rollout import EpisodeRunner, Rollout, hybrid_loss
from agents.runs import (
    RunLock,
    StopFlag,
    default_run_dir,
    env_kwargs_for,
    finished_run,
    finite,
    load_resume_state,
    prepare_run_dir,
    provenance,
    resolve_device,
    set_seed,
    write_json,
)
from ram_env.seeding import stream_seed
from ram_env.vector import GlimpseVectorEnv


class StepDecay(Protocol):
    """A configuration with the seed implementation's staircase schedule (``TrainConfig``, ``ControlConfig``)."""

    lr_decay: float
    lr_decay_steps: int


def lr_factor(step: int, config: StepDecay) -> float:
    """Staircase decay ``lr_decay ** (step // lr_decay_steps)``, times a linear warmup ``min(1, (step + 1) / N)``
    for configurations with ``warmup_updates = N > 0`` (:class:`~agents.config.TrainConfig`; others have none)."""
    factor = config.lr_decay ** (step // config.lr_decay_steps)
    warmup = getattr(config, "warmup_updates", 0)
    if warmup > 0 and step < warmup:
        factor *= (step + 1) / warmup
    return factor


#: Eager updates (on a side stream) before the update is captured: lazy initialisations happen outside the capture.
GRAPH_WARMUP = 3


def build_model(env: GlimpseVectorEnv, config: TrainConfig) -> RecurrentAttentionModel:
    glimpse_shape = cast(spaces.Box, env.single_observation_space["glimpse"]).shape
    return RecurrentAttentionModel(glimpse_shape, env.task.n_classes, config.ram_config())


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

    def __init__(self, config: TrainConfig, *, progress: bool = True, stop: StopFlag | None = None):
        """
        :param config: the run's configuration. With ``config.resume`` set it must be the resumed run's configuration
            (``agents.runs.resume_config`` builds it from the checkpoint and the command line); the task and the
            model's shape must match the checkpoint's.
        :param progress: show a progress bar and a line per epoch.
        :param stop: training stops (after a validation and a checkpoint) at the first update boundary after
            ``stop.requested`` turns true; the command line sets it on SIGINT/SIGTERM.
        """
        self.ddp = ddp = _Dist.from_environment()
        self.progress = progress
        self.stop = stop or StopFlag()
        state: dict[str, Any] | None = None
        if config.resume is not None:
            state, run_dir = load_resume_state(config, "ram")
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
            validate_actions=False,  # the rollout's actions are in range by construction: no host sync per step
            **{**self.env_kwargs, "split": "train"},
        )
        self.lock = None
        if ddp.is_main:
            self.lock = RunLock(run_dir).acquire()  # a second live writer of this directory fails here
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
        # The rollout as one forward call (what DDP synchronises on).
        self.agent: nn.Module = Rollout(self.model)
        if ddp.world > 1:
            self.agent = DistributedDataParallel(self.agent)
        self.optimizer = torch.optim.Adam(
            self.model.parameters(),
            lr=config.learning_rate,
            weight_decay=config.weight_decay,
            decoupled_weight_decay=True,
            fused=True,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: lr_factor(step, config))
        self.global_step, self.history, self.best_val, elapsed = 0, [], math.inf, 0.0
        self.provenance = provenance(device)
        if state is not None:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self._apply_optimizer_settings()
            self.global_step, self.history = state["global_step"], state["history"]
            self.best_val, elapsed = state["best_val"], state["wall_time"]
            # Every session of a run that trained a checkpoint, oldest first.
            self.provenance["sessions"] = [*state.get("provenance", {}).get("sessions", []), _session(state)]
        self.steps_per_epoch = math.ceil((config.epoch_images or len(train_env.task.data)) / config.batch_size)
        self.runner = EpisodeRunner(train_env, start=False)  # restarted with the update's seed before each batch
        self.noise = torch.Generator(device=device)
        # CUDA graph of the update (see the module docstring): captured after GRAPH_WARMUP eager updates.
        self.use_graph = config.cuda_graph and device.type == "cuda" and ddp.world == 1
        self.graph: torch.cuda.CUDAGraph | None = None
        self._graph_outputs: tuple[dict[str, torch.Tensor], Any] | None = None
        self._eager_updates = 0
        self.writer = None
        if ddp.is_main:
            write_json(run_dir / "config.json", dataclasses.asdict(config))
            from torch.utils.tensorboard import SummaryWriter  # imported here: tensorboard is slow to import

            self.writer = SummaryWriter(str(run_dir / "tb"), purge_step=self.global_step if state else None)
            self.writer.add_text("config", json.dumps(dataclasses.asdict(config), indent=2))
        self.start = time.perf_counter() - elapsed  # the run's wall clock, counting earlier sessions
        self.last_validation = time.perf_counter()  # for config.validate_every_seconds

    def _apply_optimizer_settings(self) -> None:
        """After loading a checkpoint's optimizer and scheduler: this run's learning rate, schedule and weight decay.

        ``load_state_dict`` restores the saved ones, so a ``--learning-rate`` or ``--weight-decay`` given with
        ``--resume`` (reported as applied) was ignored, and a changed ``--lr-decay`` took effect one update late.
        """
        config, groups = self.config, self.optimizer.param_groups
        self.scheduler.base_lrs = [config.learning_rate] * len(groups)
        for group in groups:
            group["initial_lr"] = config.learning_rate
            group["lr"] = config.learning_rate * lr_factor(self.scheduler.last_epoch, config)
            group["weight_decay"] = config.weight_decay
            group["decoupled_weight_decay"] = True  # checkpoints written before --weight-decay existed hold False

    def close(self) -> None:
        """Release the run directory (its lock and TensorBoard writer) without training further."""
        if self.writer is not None:
            self.writer.close()
        if self.lock is not None:
            self.lock.release()

    def run(self) -> dict[str, Any]:
        """Train to ``epochs`` (or the time limit, or a stop request); returns the summary (also in ``summary.json``).

        A run that stops between epochs (time limit, stop request) validates first, so ``best.pt`` always exists.
        """
        try:
            return self._run()
        finally:
            if self.lock is not None:
                self.lock.release()

    def _run(self) -> dict[str, Any]:
        config, ddp = self.config, self.ddp
        total_steps = config.epochs * self.steps_per_epoch
        checkpoint_every = config.checkpoint_every or self.steps_per_epoch
        # The time limit counts this invocation's wall time (a resumed run gets the whole limit again).
        deadline = None if config.time_limit is None else time.perf_counter() + 60 * config.time_limit
        stop_reason = None
        bar = tqdm(
            total=total_steps,
            initial=self.global_step,
            disable=not (self.progress and ddp.is_main),
            unit="update",
            smoothing=0.05,
        )
        while self.global_step < total_steps:
            stats, traj = self.update()
            bar.update(1)
            if self.writer is not None and self.global_step % 50 == 0:
                _log_step(self.writer, stats, traj, self.scheduler.get_last_lr()[0], self.global_step)
                bar.set_postfix(loss=f"{stats['losses/total']:.3f}", acc=f"{stats['charts/accuracy']:.3f}")
            at_epoch_end = self.global_step % self.steps_per_epoch == 0
            interval = config.validate_every_seconds
            if at_epoch_end:
                self._validate_and_checkpoint()
            elif interval is not None and ddp.any(  # every process agrees (one collective, only with the option)
                time.perf_counter() - self.last_validation >= interval, self.device
            ):
                self._validate_and_checkpoint(interval=True)
            elif self.global_step % checkpoint_every == 0 and ddp.is_main:
                self._checkpoint()
            late = deadline is not None and time.perf_counter() > deadline
            if ddp.any(self.stop.requested or late, self.device):
                stop_reason = "interrupted" if self.stop.requested else "time limit"
                if not at_epoch_end:  # the epoch's validation has not run: score the weights the run stops with
                    self._validate_and_checkpoint(stopped=stop_reason)
                break
        bar.close()
        if self.writer is not None:
            self.writer.close()
        summary = {
            "run_dir": str(self.run_dir),
            "epochs": self.global_step // self.steps_per_epoch,
            "steps": self.global_step,
            "images": self.global_step * config.batch_size,
            "wall_time": round(time.perf_counter() - self.start, 2),
            "best_val_error_mean_location": finite(self.best_val),  # null: not validated yet
            "stopped": stop_reason,
            "device": str(self.device),
            "cuda_graph": self.graph is not None,
            "processes": ddp.world,
        }
        if ddp.is_main:
            write_json(self.run_dir / "summary.json", summary)
        if ddp.world > 1:
            dist.barrier()
            dist.destroy_process_group()
        if stop_reason == "interrupted":
            raise TrainingInterrupted(self.run_dir / "last.pt")
        return summary

    def update(self) -> tuple[dict[str, torch.Tensor], Any]:
        """One update: a fresh batch seeded by (seed, update, rank), the hybrid loss, a clipped Adam step, the
        learning-rate schedule's step. Returns the loss statistics and the batch's trajectory (on CUDA with a
        captured graph: the graph's output tensors, overwritten by the next update)."""
        config = self.config
        self.model.train()
        capture_pending = self.use_graph and self.graph is None
        if capture_pending and self._eager_updates >= GRAPH_WARMUP:
            self._capture()
            capture_pending = False
        self._seed_batch()
        if self.graph is not None:
            self.graph.replay()
            assert self._graph_outputs is not None
            stats, traj = self._graph_outputs
        else:
            # Before the capture, eager updates run on a side stream, as torch.cuda.graphs asks of warm-up work.
            with _side_stream(self.device) if capture_pending else nullcontext():
                stats, traj = self._gradients()
            self._eager_updates += 1
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.global_step += 1
        return stats, traj

    def _seed_batch(self) -> None:
        """Seed the environment and the location noise for this update: (seed, update, rank) alone fix the batch,
        so a run resumes exactly at any update."""
        config, rank = self.config, self.ddp.rank
        self.runner.env.generator.manual_seed(stream_seed(config.seed, "train/env", self.global_step, rank))
        self.noise.manual_seed(stream_seed(config.seed, "train/noise", self.global_step, rank))

    def _gradients(self) -> tuple[dict[str, torch.Tensor], Any]:
        """The update up to the optimizer: new episodes (drawn from the env's generator as it stands), the rollout,
        the hybrid loss and its gradients in ``.grad``. No host sync: this is what the CUDA graph captures."""
        self.runner.restart()
        autocast = torch.autocast(
            self.device.type,
            dtype=torch.bfloat16,
            enabled=self.config.precision == "bf16",
            cache_enabled=not self.use_graph,  # a cast cached inside a capture would outlive it
        )
        with autocast:
            traj = self.agent(self.runner, generator=self.noise)
        loss, stats = hybrid_loss(traj)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        return stats, traj

    def _capture(self) -> None:
        """Capture :meth:`_gradients` as a CUDA graph, then check one update of it against the eager computation.

        The check runs this update's batch eagerly, then replays the graph on the same seeds, and compares the loss
        statistics and every gradient. On a failure or a disagreement the graph is dropped (with a warning) and
        training continues eagerly; either way nothing of the run's state has changed (neither path steps the
        optimizer), and ``update`` goes on with this update's gradients.
        """
        params = [p for p in self.model.parameters() if p.requires_grad]
        try:
            graph = torch.cuda.CUDAGraph()
            for generator in (self.runner.env.generator, self.noise):
                graph.register_generator_state(generator)  # replays read the generators' seeds as they stand then
            self.optimizer.zero_grad(set_to_none=True)  # the backward inside the capture allocates static .grad
            with torch.cuda.graph(graph):
                outputs = self._gradients()
            static_grads = [p.grad for p in params]
            self._seed_batch()
            eager_stats, _ = self._gradients()
            eager_stats = {k: v.clone() for k, v in eager_stats.items()}
            eager_grads = [p.grad.clone() if p.grad is not None else None for p in params]
            for p, g in zip(params, static_grads, strict=True):
                p.grad = g  # back to the graph's gradient buffers, which every replay rewrites
            self._seed_batch()
            graph.replay()
            mismatch = _first_mismatch(outputs[0], eager_stats, static_grads, eager_grads)
        except RuntimeError as error:  # e.g. an operation that cannot be captured on this torch / driver
            torch.cuda.synchronize(self.device)
            warnings.warn(
                f"CUDA graph capture failed ({error}); training eagerly (--no-cuda-graph skips the try)", stacklevel=2
            )
            self.use_graph = False
            return
        if mismatch is not None:
            warnings.warn(
                f"the captured update disagrees with the eager one ({mismatch}); training eagerly "
                "(--no-cuda-graph skips the try)",
                stacklevel=2,
            )
            self.use_graph = False
            return
        self.graph, self._graph_outputs = graph, outputs

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
            "provenance": self.provenance,
        }
        if best:
            save_checkpoint(payload, self.run_dir / "best.pt")
        save_checkpoint(payload, self.run_dir / "last.pt")

    def _validate_and_checkpoint(self, *, stopped: str | None = None, interval: bool = False) -> None:
        """Validate (process 0), log, and write last.pt (and best.pt on a new best).

        :param stopped: why the run stops between epochs (the record is marked so); None at an epoch's end.
        :param interval: a validation between epochs due to ``validate_every_seconds`` (the record is marked
            ``"interval": true``).
        """
        if self.ddp.is_main:
            config = self.config
            validation_start = time.perf_counter()
            train_time = validation_start - self.start
            result = evaluate_model(
                self.model, self.val_kwargs, device=self.device, mc_samples=config.eval_mc_samples, seed=config.seed
            )
            validation_time = time.perf_counter() - validation_start
            record: dict[str, Any] = {
                "epoch": self.global_step // self.steps_per_epoch,
                "step": self.global_step,
                "images": self.global_step * config.batch_size,
                "wall_time": round(time.perf_counter() - self.start, 2),
                "train_time": round(train_time, 2),
                "val_error_sampled": result.error_sampled,
                "val_error_mean_location": result.error_mean_location,
                "val_error_monte_carlo": result.error_monte_carlo,
                "validation_time": round(validation_time, 3),
            }
            if stopped is not None:
                record["stopped"] = stopped
            if interval:
                record["interval"] = True
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
                where = f"epoch {record['epoch']}"
                if stopped is not None or interval:
                    where = f"update {self.global_step} ({stopped or 'interval'})"
                tqdm.write(
                    f"{where}: val error {result.error_mean_location:.2f}% (mean locations), "
                    f"{result.error_sampled:.2f}% (sampled), {record['wall_time'] / 60:.1f} min"
                )
        self.last_validation = time.perf_counter()
        if self.ddp.world > 1:
            dist.barrier()


def train(config: TrainConfig, *, progress: bool = True, stop: StopFlag | None = None) -> dict[str, Any]:
    """Train (or resume) a RAM agent; returns the final summary (also in ``summary.json``). See :class:`RAMTrainer`.

    Resuming a run that has trained all its epochs changes nothing and returns its summary (:func:`finished_run`).
    """
    finished = finished_run(config)
    if finished is not None:
        return finished
    return RAMTrainer(config, progress=progress, stop=stop).run()


@contextmanager
def _side_stream(device: torch.device) -> Iterator[None]:
    """Run the block on a new CUDA stream that starts after the current one's work and finishes before its next."""
    current = torch.cuda.current_stream(device)
    stream = torch.cuda.Stream(device)
    stream.wait_stream(current)
    with torch.cuda.stream(stream):
        yield
    current.wait_stream(stream)


def _first_mismatch(
    stats: dict[str, torch.Tensor],
    reference: dict[str, torch.Tensor],
    grads: list[torch.Tensor | None],
    reference_grads: list[torch.Tensor | None],
    *,
    rtol: float = 1e-4,
    atol: float = 1e-6,
) -> str | None:
    """What first differs between two computations of one update's statistics and gradients (None: they agree)."""
    for key, value in reference.items():
        if not torch.allclose(stats[key].float(), value.float(), rtol=rtol, atol=atol):
            return f"{key}: {float(stats[key]):.6g} against {float(value):.6g}"
    for i, (g, ref) in enumerate(zip(grads, reference_grads, strict=True)):
        if (g is None) != (ref is None):
            return f"gradient {i} is missing on one side"
        if g is not None and ref is not None and not torch.allclose(g, ref, rtol=rtol, atol=atol * 10):
            return f"gradient {i} differs by up to {float((g - ref).abs().max()):.3g}"
    return None


def _session(state: dict[str, Any]) -> dict[str, Any]:
    """What an earlier session of a resumed run contributed: where it ran and how far it got."""
    earlier = {k: v for k, v in state.get("provenance", {}).items() if k != "sessions"}
    return {**earlier, "until_step": state["global_step"], "until_wall_time": state["wall_time"]}


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
