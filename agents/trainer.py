"""Training the RAM agent with the hybrid loss against the batched vector environment.

:func:`train` is what ``train_agent.py --algo ram`` runs: Adam with the seed implementation's step decay and gradient
clipping, a validation pass after each epoch, ``best.pt`` (lowest validation error with mean locations) and
``last.pt`` checkpoints, exact ``--resume``, a progress bar, TensorBoard logs and ``config.json`` / ``history.jsonl``
in the run directory.

Reproducibility: the environment and the location noise are reseeded at the start of every epoch from
``(seed, epoch)``, so a run resumed from the checkpoint of epoch ``e`` replays epochs ``e+1 ...`` exactly as the
uninterrupted run does (on CPU; see the README on GPU determinism).
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import shutil
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from tqdm import tqdm

import ram_env  # noqa: F401 - registers the environment ids
from agents.checkpoint import load_checkpoint, save_checkpoint
from agents.config import TrainConfig, UserError
from agents.evaluation import evaluate_model
from agents.ram import RecurrentAttentionModel
from agents.rollout import EpisodeRunner, hybrid_loss, rollout
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
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def env_kwargs_for(config: TrainConfig) -> dict[str, Any]:
    """The registered defaults of ``config.env`` with the run's overrides."""
    try:
        spec = gym.spec(config.env)
    except gym.error.Error as err:
        known = ", ".join(ram_env.BENCHMARKS)
        raise UserError(f"unknown environment id {config.env!r} ({err}); registered ids: {known}") from None
    kwargs = dict(spec.kwargs)
    if config.glimpses is not None:
        kwargs["glimpses"] = config.glimpses
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


def lr_factor(step: int, config: TrainConfig) -> float:
    """Staircase decay: ``lr_decay ** (step // lr_decay_steps)``."""
    return config.lr_decay ** (step // config.lr_decay_steps)


def _epoch_seed(seed: int, epoch: int, stream: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, stream]).generate_state(1)[0])


def build_model(env: GlimpseVectorEnv, config: TrainConfig) -> RecurrentAttentionModel:
    glimpse_shape = env.single_observation_space["glimpse"].shape
    return RecurrentAttentionModel(glimpse_shape, env.task.n_classes, config.ram_config())


def train(config: TrainConfig, *, progress: bool = True) -> dict[str, Any]:
    """Train (or resume) a RAM agent; returns the final summary (also in ``summary.json``)."""
    state: dict[str, Any] | None = None
    if config.resume is not None:
        state = load_checkpoint(config.resume)
        if state["algo"] != "ram":
            raise UserError(f"{config.resume} is a {state['algo']} checkpoint; resume it with --algo {state['algo']}")
        saved = TrainConfig(**state["config"])
        if config.env != saved.env and config.env != TrainConfig.env:
            raise UserError(
                f"--env {config.env} conflicts with the checkpoint's env {saved.env}; drop --env to resume"
            )
        # The saved run's settings win; only the length of the run may change.
        config = dataclasses.replace(saved, epochs=config.epochs, resume=config.resume, time_limit=config.time_limit)
        run_dir = Path(config.resume)
        run_dir = run_dir if run_dir.is_dir() else run_dir.parent
    else:
        run_dir = prepare_run_dir(Path(config.output) if config.output else default_run_dir(config), overwrite=config.overwrite)
    device = resolve_device(config.device)
    set_seed(config.seed)
    env_kwargs = env_kwargs_for(config)
    train_env = GlimpseVectorEnv(
        config.batch_size * config.mc_samples,
        device=device,
        mc_samples=config.mc_samples,
        **{**env_kwargs, "split": "train"},
    )
    val_kwargs = {**env_kwargs, "split": "validation"}
    model = build_model(train_env, config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate, fused=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, config))
    epoch, global_step, history, best_val, elapsed = 0, 0, [], math.inf, 0.0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        epoch, global_step, history = state["epoch"], state["global_step"], state["history"]
        best_val, elapsed = state["best_val"], state["wall_time"]
    (run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2) + "\n")

    from torch.utils.tensorboard import SummaryWriter  # imported here: tensorboard is slow to import

    writer = SummaryWriter(str(run_dir / "tb"), purge_step=global_step if state is not None else None)
    writer.add_text("config", json.dumps(dataclasses.asdict(config), indent=2))
    runner = EpisodeRunner(train_env)
    noise = torch.Generator(device=device)
    images_per_epoch = config.epoch_images or len(train_env.task.data)
    steps_per_epoch = math.ceil(images_per_epoch / config.batch_size)
    base = {
        "algo": "ram",
        "env_id": config.env,
        "env_kwargs": env_kwargs,
        "config": dataclasses.asdict(config),
        "model_args": model.model_args(),
    }
    deadline = None if config.time_limit is None else time.perf_counter() + 60 * config.time_limit - elapsed
    start = time.perf_counter() - elapsed
    stopped_early = False
    while epoch < config.epochs and not stopped_early:
        runner.restart(seed=_epoch_seed(config.seed, epoch, 0))
        noise.manual_seed(_epoch_seed(config.seed, epoch, 1))
        model.train()
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{config.epochs}", disable=not progress, leave=False)
        for _ in bar:
            traj = rollout(model, runner, generator=noise)
            loss, stats = hybrid_loss(traj)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            global_step += 1
            if global_step % 50 == 0:
                _log_step(writer, stats, traj, scheduler.get_last_lr()[0], global_step)
                bar.set_postfix(loss=f"{stats['losses/total'].item():.3f}", acc=f"{stats['charts/accuracy'].item():.3f}")
            if deadline is not None and time.perf_counter() > deadline:
                stopped_early = True
                break
        if stopped_early:
            break
        epoch += 1
        train_time = time.perf_counter() - start
        result = evaluate_model(model, val_kwargs, device=device, mc_samples=config.eval_mc_samples, seed=config.seed)
        record = {
            "epoch": epoch,
            "step": global_step,
            "images": global_step * config.batch_size,
            "wall_time": round(time.perf_counter() - start, 2),
            "train_time": round(train_time, 2),
            "val_error_sampled": result.error_sampled,
            "val_error_mean_location": result.error_mean_location,
            "val_error_monte_carlo": result.error_monte_carlo,
        }
        history.append(record)
        for key in ("val_error_sampled", "val_error_mean_location", "val_error_monte_carlo"):
            writer.add_scalar(f"eval/{key}", record[key], global_step)
        with open(run_dir / "history.jsonl", "a") as handle:
            handle.write(json.dumps(record) + "\n")
        elapsed = time.perf_counter() - start
        payload = {
            **base,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "epoch": epoch,
            "global_step": global_step,
            "history": history,
            "wall_time": elapsed,
        }
        if result.error_mean_location < best_val:
            best_val = result.error_mean_location
            save_checkpoint({**payload, "best_val": best_val}, run_dir / "best.pt")
        save_checkpoint({**payload, "best_val": best_val}, run_dir / "last.pt")
        if progress:
            tqdm.write(
                f"epoch {epoch}: val error {result.error_mean_location:.2f}% (mean locations), "
                f"{result.error_sampled:.2f}% (sampled), {elapsed / 60:.1f} min"
            )
    writer.close()
    summary = {
        "run_dir": str(run_dir),
        "epochs": epoch,
        "steps": global_step,
        "wall_time": round(time.perf_counter() - start, 2),
        "best_val_error_mean_location": best_val,
        "stopped_by_time_limit": stopped_early,
        "device": str(device),
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _log_step(writer, stats: dict[str, torch.Tensor], traj, lr: float, step: int) -> None:
    for key, value in stats.items():
        writer.add_scalar(key, float(value), step)
    loc = traj.locations[:, 1:]  # (N, T-1, 2) chosen locations (the first one is the env's)
    if loc.numel():
        writer.add_scalar("locations/mean_x", float(loc[..., 0].mean()), step)
        writer.add_scalar("locations/mean_y", float(loc[..., 1].mean()), step)
        writer.add_scalar("locations/spread", float(loc.std(dim=0).mean()), step)
        writer.add_scalar("locations/at_border", float((loc.abs() > 0.99).float().mean()), step)
    writer.add_scalar("charts/learning_rate", lr, step)
