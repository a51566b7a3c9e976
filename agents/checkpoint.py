"""Checkpoints: written atomically, loaded safely, self-describing.

A checkpoint is a ``torch.save`` dict holding everything needed to rebuild the agent and its environment without
anything else: ``format``/``version``, ``algo``, ``env_id``, ``env_kwargs`` (the resolved environment arguments),
``config`` (the :class:`~agents.config.TrainConfig`), ``model_args`` and ``model`` (architecture and weights), and for
resuming the optimizer and scheduler states, ``epoch``, ``global_step`` and ``history``. It holds only tensors and
plain Python values, so it loads with ``torch.load(weights_only=True)``: opening a foreign file cannot run code.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from agents.config import UserError

FORMAT = "ram-attention-checkpoint"
VERSION = 1
#: Checkpoint keys that only resuming needs: a shipped copy (``agents.manifest``) leaves them out.
RESUME_ONLY_KEYS = ("optimizer", "scheduler")


def save_checkpoint(payload: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``payload`` to ``path`` atomically: a temporary file in the same directory, then a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save({"format": FORMAT, "version": VERSION, **payload}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def resolve_checkpoint_path(path: str | os.PathLike, prefer: str = "last") -> Path:
    """A checkpoint file, or a run directory: its ``last.pt`` (``prefer="last"``, what ``--resume`` continues), or
    its ``best.pt`` when it exists and else ``last.pt`` (``prefer="best"``, what ``evaluate.py`` scores)."""
    if prefer not in ("last", "best"):
        raise ValueError(f"prefer must be 'last' or 'best', got {prefer!r}")
    path = Path(path)
    if path.is_dir():
        names = ("best.pt", "last.pt") if prefer == "best" else ("last.pt",)
        path = next((path / n for n in names if (path / n).is_file()), path / names[-1])
        if not path.is_file():
            raise UserError(f"run directory {path.parent} holds no {' or '.join(names)}; pass a .pt file")
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist; pass a .pt file or a run directory holding last.pt")
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and check a checkpoint; a missing, truncated, corrupt or foreign file raises :class:`UserError`."""
    path = resolve_checkpoint_path(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many kinds for a damaged file
        raise UserError(
            f"cannot read checkpoint {path}: the file is truncated, corrupt or not a checkpoint of this project "
            f"({type(err).__name__}); use last.pt or best.pt of a finished run"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserError(f"{path} is not a checkpoint of this project (no '{FORMAT}' marker)")
    if payload.get("version") != VERSION:
        raise UserError(f"{path} has checkpoint version {payload.get('version')}; this code reads version {VERSION}")
    missing = [k for k in ("algo", "env_id", "env_kwargs", "config") if k not in payload]
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)}; it was not written by train_agent.py")
    return payload
