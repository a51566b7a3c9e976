"""Run management shared by both trainers (``agents.trainer`` and ``agents.sb3``) and ``evaluate.py``.

A *run* is a directory holding ``config.json``, ``last.pt`` / ``best.pt``, ``history.jsonl``, ``summary.json`` and
TensorBoard logs. This module resolves the device and the environment arguments of a run, creates (or refuses) its
directory, locks it against a second live writer, restores a run's configuration for ``--resume``, records where a
checkpoint was trained, and turns SIGINT/SIGTERM into a stop request. Signal handlers are installed only by the
command-line entry points (:func:`stop_on_signals`); library code only reads a :class:`StopFlag`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import math
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import gymnasium as gym
import numpy as np
import torch

import ram_env
from agents.checkpoint import RESUME_ONLY_KEYS, load_checkpoint, resolve_checkpoint_path
from agents.config import (
    ALGO_NAMES,
    TrainConfig,
    UserError,
    check_flags_apply,
    parse_command_line,
    parse_env_args,
    resolve_config,
)
from ram_env.task import TaskConfig

#: Fields that define the task and the model's weights: a resumed run cannot change them.
FIXED_ON_RESUME = (
    "env",
    "algo",
    "env_args",
    "glimpses",
    "core",
    "hidden_size",
    "glimpse_hidden",
    "glimpse_out",
    "tanh_mean",
    "conv_glimpse",
    "n_envs",
)

#: Fields that belong to one invocation, not to the run: a resumed run takes them from its own command line only.
PER_INVOCATION = ("resume", "overwrite", "time_limit", "threads")

RUN_FILES = ("config.json", "last.pt", "best.pt", "history.jsonl", "summary.json", "tb")


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


def env_kwargs_for(config: TrainConfig, defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """The registered defaults of ``config.env``, then ``defaults`` (an algorithm's ``env_kwargs``), then the run's
    overrides (without ``split``: the trainer picks it)."""
    try:
        spec = gym.spec(config.env)
    except gym.error.Error as err:
        known = ", ".join(ram_env.BENCHMARKS)
        raise UserError(f"unknown environment id {config.env!r} ({err}); registered ids: {known}") from None
    kwargs = {**spec.kwargs, **(defaults or {}), **parse_env_args(config.env_args)}
    if config.glimpses is not None:
        kwargs["glimpses"] = config.glimpses
    kwargs.pop("split", None)
    try:
        TaskConfig.from_kwargs(**kwargs)
    except (TypeError, ValueError) as err:
        raise UserError(f"bad environment arguments for {config.env}: {err}") from None
    return kwargs


def default_run_dir(config: TrainConfig) -> Path:
    """``runs/<env>__<preset or algo>__<seed>__<time>``."""
    name = config.env.replace("/", "-")
    tag = config.preset or config.algo
    return Path("runs") / f"{name}__{tag}__{config.seed}__{time.strftime('%Y%m%d-%H%M%S')}"


def prepare_run_dir(path: Path, *, overwrite: bool) -> Path:
    """Create the run directory; refuse one that holds another run unless ``overwrite`` (then empty it).

    Call it while holding the directory's :class:`RunLock`, so a live run's files are never deleted.
    """
    if path.exists() and not path.is_dir():
        raise UserError(f"--output {path} is a file; give a directory")
    taken = path.is_dir() and any((path / n).exists() for n in ("config.json", "last.pt", "best.pt"))
    if taken and not overwrite:
        raise UserError(
            f"--output {path} already holds a run; pass --resume {path} to continue it or --overwrite to replace it"
        )
    if taken:
        for name in RUN_FILES:
            target = path / name
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)
    path.mkdir(parents=True, exist_ok=True)
    return path


class RunLock:
    """An exclusive advisory lock (``fcntl.flock`` on ``<run>/.lock``) held while a process writes a run directory.

    A second live process that would write the same directory (``--overwrite``, ``--resume``) fails at once with a
    :class:`UserError` instead of interleaving or deleting the first one's files. The lock dies with its process
    (also on SIGKILL), so a killed run never leaves a stale lock.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / ".lock"
        self._handle: IO[str] | None = None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 - held open for the life of the run
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            handle.close()
            raise UserError(
                f"{self.path.parent} is being written by a live run ({owner}); wait for it to finish, stop it, "
                "or choose another --output"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {platform.node()}\n")
        handle.flush()
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def resume_config(explicit: dict[str, Any]) -> TrainConfig:
    """The configuration of a resumed run: the checkpoint's saved config, then the flags given on the command line.

    Prints what is resumed (checkpoint, epoch, update) and every setting the command line changes. A flag that would
    change the task or the model's weights (:data:`FIXED_ON_RESUME`) is refused; :data:`PER_INVOCATION` settings
    (``--time-limit``, ``--overwrite``, ``--threads``) come from this command line alone.
    """
    path = explicit["resume"]
    state = load_checkpoint(path)
    if state["algo"] not in ALGO_NAMES:
        raise UserError(
            f"{path} is a {state['algo']} control model (benchmarks/train_controls.py), which train_agent.py does not "
            "train; train a new one with benchmarks/train_controls.py"
        )
    saved = {k: v for k, v in state["config"].items() if k not in PER_INVOCATION}
    changed, invocation = {}, {k: v for k, v in explicit.items() if k in PER_INVOCATION}
    for name, value in explicit.items():
        if name in PER_INVOCATION or saved.get(name) == value:
            continue
        if name == "preset" or name in FIXED_ON_RESUME:
            raise UserError(
                f"--{name.replace('_', '-')} {value} conflicts with the resumed run's {saved.get(name)!r}; "
                f"drop --{name.replace('_', '-')} to resume (a new setting needs a new run)"
            )
        changed[name] = value
    try:
        config = TrainConfig(**{**saved, **changed, **invocation})
    except TypeError as err:
        raise UserError(f"{path} holds a configuration this version cannot read: {err}") from None
    config.validate()
    where = f"update {state.get('global_step', state.get('num_timesteps'))}"
    if "epoch" in state:
        where = f"epoch {state['epoch']}, {where}"
    print(f"resuming {path} ({where})", file=sys.stderr)
    for name, value in changed.items():
        print(f"  from the command line: {name} = {value!r} (the run had {saved.get(name)!r})", file=sys.stderr)
    return config


def config_from_command_line(argv: list[str] | None = None) -> TrainConfig | None:
    """``train_agent.py``'s configuration: the resumed run's (``--resume``) or a new one's, with the flags given on
    the command line applied last. ``None`` after ``--list-presets``."""
    explicit = parse_command_line(argv)
    if explicit is None:
        return None
    config = resume_config(explicit) if explicit.get("resume") is not None else resolve_config(explicit)
    check_flags_apply(config.algo, explicit)
    return config


def load_resume_state(config: TrainConfig, algo: str) -> tuple[dict[str, Any], Path]:
    """Load the checkpoint named by ``config.resume`` and check that ``config`` can continue it.

    Refused before anything is written: a checkpoint of another algorithm, a change to the task or the model, a
    shipped copy without the optimizer state (``checkpoints/*.pt``), and a checkpoint older than its run's
    ``last.pt`` (training on from ``best.pt`` would overwrite the newer ``last.pt``, ``best.pt`` and history).

    :return: the checkpoint and its run directory.
    """
    assert config.resume is not None
    path = resolve_checkpoint_path(config.resume)
    state = load_checkpoint(path)
    if state["algo"] != algo:
        raise UserError(f"{config.resume} is a {state['algo']} checkpoint; resume it with --algo {state['algo']}")
    saved = state["config"]
    for name in FIXED_ON_RESUME:
        if name in saved and getattr(config, name) != saved[name]:
            raise UserError(
                f"--{name.replace('_', '-')} {getattr(config, name)} conflicts with the checkpoint's "
                f"{saved[name]!r}; drop it to resume"
            )
    needed = RESUME_ONLY_KEYS if algo == "ram" else ("sb3_model",)
    if "stripped" in state or any(key not in state for key in needed):
        raise UserError(
            f"{path} holds the weights without the optimizer state (a shipped copy for evaluate.py), so it cannot be "
            "resumed; resume the run directory it was trained in (its last.pt), or train a new run"
        )
    run_dir = path.parent
    last = run_dir / "last.pt"
    if path.name != "last.pt" and last.is_file():
        newer = load_checkpoint(last)
        if training_progress(newer) > training_progress(state):
            raise UserError(
                f"{path} is at {_progress_text(state)} but {last} of the same run is at {_progress_text(newer)}: "
                f"training on from the older one would overwrite the newer files; resume the run (--resume "
                f"{run_dir}), or copy {path.name} into a new directory to train a branch from it"
            )
    return state, run_dir


def training_progress(state: dict[str, Any]) -> int:
    """How far a checkpoint's run has trained: updates (RAM agent) or environment steps (stable-baselines3)."""
    return int(state.get("global_step", state.get("num_timesteps", 0)))


def _progress_text(state: dict[str, Any]) -> str:
    if "global_step" in state:
        return f"update {state['global_step']}"
    return f"environment step {state.get('num_timesteps', 0)}"


def finished_run(config: TrainConfig) -> dict[str, Any] | None:
    """For ``--resume`` of a run that has trained its whole budget: its summary, with a message that says how to train
    it further; no file is touched. None when there is something to train (or nothing is resumed).

    The budget is ``config.epochs`` (RAM agent) or ``config.total_timesteps`` (stable-baselines3), so a larger value
    given with ``--resume`` trains on. Before, a finished run was "resumed" without a word and its ``config.json``,
    ``summary.json``, ``history.jsonl`` and ``last.pt`` were rewritten.
    """
    if config.resume is None:
        return None
    state = load_checkpoint(config.resume)
    if "stripped" in state:
        return None  # not resumable: load_resume_state says why
    budget: int | None
    if "global_step" in state:
        done, flag, budget = state.get("epoch", 0) >= config.epochs, "--epochs", config.epochs
    else:
        flag, budget = "--total-timesteps", config.total_timesteps
        done = budget is not None and state.get("num_timesteps", 0) >= budget
    if not done:
        return None
    run_dir = resolve_checkpoint_path(config.resume).parent
    print(
        f"{run_dir} has already trained its whole budget ({flag} {budget}): nothing to train, no file written; to "
        f"train it further, resume it with a larger {flag}",
        file=sys.stderr,
    )
    try:
        return json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return {"run_dir": str(run_dir), "stopped": None}


REPO_ROOT = Path(__file__).resolve().parents[1]


def git_commit(root: Path = REPO_ROOT) -> str | None:
    """The commit checked out in ``root`` (``-dirty`` appended when tracked files differ from it), or None outside a
    git checkout."""
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("-dirty" if dirty else "")


def provenance(device: torch.device) -> dict[str, Any]:
    """Where a checkpoint is trained: the git commit of the code (``-dirty`` with uncommitted changes), the hardware,
    torch's version and thread count."""
    return {
        "git_commit": git_commit(),
        "hardware": hardware_name(device),
        "torch": str(torch.__version__),  # a str subclass, which weights_only loading rejects
        "threads": torch.get_num_threads(),
    }


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def hardware_name(device: torch.device) -> str:
    """The GPU's name on CUDA, else the CPU model and its core count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_model()}, {os.cpu_count()} cores"


def write_json(path: Path, value: Any) -> None:
    """Strict JSON (``NaN`` and infinities become ``null``), indented, with a final newline."""
    path.write_text(json.dumps(finite(value), indent=2, allow_nan=False) + "\n")


def finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``None`` (strict JSON has no NaN or Infinity)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return finite(dataclasses.asdict(value))
    return value


class StopFlag:
    """A request to stop training at the next update boundary (after a checkpoint). Set by the entry point's signal
    handlers (:func:`stop_on_signals`) or by any caller; trainers only read it."""

    def __init__(self) -> None:
        self.requested = False
        self.signal: int | None = None


@contextlib.contextmanager
def stop_on_signals() -> Iterator[StopFlag]:
    """For command-line entry points only: SIGINT/SIGTERM set the yielded :class:`StopFlag`; a second one raises
    ``KeyboardInterrupt`` (stop at once). The previous handlers come back on exit."""
    flag = StopFlag()

    def handle(signum: int, frame: object) -> None:
        if flag.requested:
            raise KeyboardInterrupt
        flag.requested, flag.signal = True, signum

    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handle)
    try:
        yield flag
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def is_main_process() -> bool:
    """False on every ``torchrun`` process but rank 0 (which alone reports and writes the run's files)."""
    return int(os.environ.get("RANK", "0")) == 0
