"""The checkpoint manifest: what every shipped checkpoint is, how it was trained and what it scores.

``checkpoints/manifest.json`` (written by ``benchmarks/build_manifest.py``) lists one entry per checkpoint file::

    {
      "format": "ram-attention-manifest", "version": 1,
      "evaluation": {"split": "test", "mc_samples": 10, "device": "cpu", "threads": 1, "seed": "the run's seed"},
      "entries": [
        {
          "file": "checkpoints/mnist-fc.pt",          # relative to the repository root
          "sha256": "...", "bytes": 840123,
          "row": "mnist-fc",                          # the row of the paper's tables it fills
          "kind": "control",                          # "ram" (the agent), "control" (fc, conv) or "sb3"
          "algo": "fc", "task": "mnist", "env_id": "RAM/MNIST-v0", "env_kwargs": {...},
          "preset": null, "glimpses": null, "location_policy": null, "seed": 1,
          "best_val_error": 1.62, "best_epoch": 40,   # validation error (mean locations) of the selected epoch
          "test": {"images": 10000, "mc_samples": 1, "deterministic": true,
                   "error_sampled": 1.71, "error_mean_location": 1.71, "error_monte_carlo": 1.71},
          "training": {"wall_time_s": 290.1, "budget_min": 5.0, "updates": 15640, "batch_size": 128, "mc_samples": 1,
                       "images_seen": 2001920, "episodes_seen": 2001920},
          "hardware": "AMD EPYC, 1 torch thread (2 CPUs visible), cpu",
          "trained_at": "<git commit>",
          "figures": {"curve": "results/paper/mnist-fc/curve.png", "glimpses": null}
        }
      ]
    }

The test errors are those of ``evaluate.py FILE --mc-samples 10``: :func:`agents.policies.evaluate_checkpoint`
with the run's seed, on the CPU with one torch thread, where evaluation is deterministic (:func:`check_manifest`
re-evaluates and compares). ``trained_at`` and ``hardware`` come from the checkpoint's ``provenance``
(``{"git_commit": ..., "hardware": ...}``) or, for checkpoints written before the trainer recorded it, from the
command line. ``wall_time_s``, ``updates`` and ``images_seen`` are those of the checkpoint (the kept epoch),
``budget_min`` the run's time limit (``None``: none). ``images_seen`` counts training images (updates x batch);
``episodes_seen`` counts the episodes played on them (x the Monte Carlo samples M of training).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import torch

from agents.checkpoint import RESUME_ONLY_KEYS, load_checkpoint, save_checkpoint
from agents.config import UserError, preset_of
from agents.runs import REPO_ROOT, cpu_model
from agents.threads import torch_threads

FORMAT = "ram-attention-manifest"
VERSION = 1
#: The repository root (entries' ``file`` paths are relative to it).
#: Monte Carlo samples of the manifest's test errors (as ``evaluate.py --mc-samples 10``).
MC_SAMPLES = 10
#: Task names of the environment ids (the paper's tables' rows).
TASK_NAMES = {
    "RAM/MNIST-v0": "mnist",
    "RAM/TranslatedMNIST60-v0": "translated60",
    "RAM/ClutteredMNIST60-v0": "cluttered60",
    "RAM/ClutteredMNIST100-v0": "cluttered100",
    "RAM/Omniglot-v0": "omniglot",
    "RAM/CIFAR10-v0": "cifar10",
}
#: Keys every entry has, with their JSON types (``None`` allowed where the tuple holds ``type(None)``).
ENTRY_FIELDS: dict[str, tuple[type, ...]] = {
    "file": (str,),
    "sha256": (str,),
    "bytes": (int,),
    "row": (str,),
    "kind": (str,),
    "algo": (str,),
    "task": (str,),
    "env_id": (str,),
    "env_kwargs": (dict,),
    "preset": (str, type(None)),
    "glimpses": (int, type(None)),
    "location_policy": (str, type(None)),
    "seed": (int,),
    "best_val_error": (float, int, type(None)),
    "best_epoch": (int, type(None)),
    "test": (dict,),
    "training": (dict,),
    "hardware": (str,),
    "trained_at": (str,),
    "figures": (dict,),
}
TEST_FIELDS: dict[str, tuple[type, ...]] = {
    "split": (str,),
    "images": (int,),
    "mc_samples": (int,),
    "seed": (int,),
    "deterministic": (bool,),
    "error_sampled": (float, int),
    "error_mean_location": (float, int),
    "error_monte_carlo": (float, int),
}
TRAINING_FIELDS: dict[str, tuple[type, ...]] = {
    "wall_time_s": (float, int, type(None)),
    "budget_min": (float, int, type(None)),
    "updates": (int, type(None)),
    "batch_size": (int, type(None)),
    "mc_samples": (int,),
    "images_seen": (int, type(None)),
    "episodes_seen": (int, type(None)),
}
ERROR_KEYS = ("error_sampled", "error_mean_location", "error_monte_carlo")


# ------------------------------------------------------------------------------------------------------ provenance


def hardware_description(device: torch.device | str = "cpu", threads: int | None = None) -> str:
    """One line naming the hardware of a run: the GPU, or the CPU model, and the torch thread count."""
    device = torch.device(device)
    threads = torch.get_num_threads() if threads is None else threads
    cpu = f"{cpu_model()}, {threads} torch thread{'s' if threads != 1 else ''} ({os.cpu_count()} CPUs visible)"
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (cuda), host {cpu}"
    return f"{cpu}, cpu"


def _as_text(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items())
    return str(value)


# --------------------------------------------------------------------------------------------------------- entries


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def relative_file(path: str | os.PathLike, root: Path = REPO_ROOT) -> str:
    """``path`` relative to ``root`` (POSIX separators); a checkpoint outside the repository is refused."""
    resolved = Path(path).resolve()
    try:
        return resolved.relative_to(root.resolve()).as_posix()
    except ValueError:
        raise UserError(f"{path} lies outside the repository {root}; copy it under checkpoints/ first") from None


def row_name(payload: dict[str, Any]) -> str:
    """The row of the paper's tables a checkpoint fills: ``mnist-6g``, ``cluttered60-8g-random``, ``mnist-fc``."""
    task = TASK_NAMES.get(payload["env_id"], payload["env_id"].replace("/", "-"))
    if payload["algo"] != "ram":
        return f"{task}-{payload['algo']}"
    glimpses = payload["env_kwargs"].get("glimpses")
    policy = payload.get("model_args", {}).get("config", {}).get("location_policy", "learned")
    name = preset_of(payload["config"]) or f"{task}-{glimpses}g"
    return f"{name}-random" if policy == "random" else name


def strip_for_shipping(payload: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint without what only resuming needs (optimizer and scheduler states); ``evaluate.py`` works."""
    stripped = {k: v for k, v in payload.items() if k not in RESUME_ONLY_KEYS and k not in ("format", "version")}
    if any(k in payload for k in RESUME_ONLY_KEYS):
        stripped["stripped"] = [k for k in RESUME_ONLY_KEYS if k in payload]
    return stripped


def ship_checkpoint(source: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Copy ``source`` to ``target`` without its optimizer and scheduler states (a smaller file)."""
    return save_checkpoint(strip_for_shipping(load_checkpoint(source)), target)


def evaluate_for_manifest(payload: dict[str, Any], *, mc_samples: int = MC_SAMPLES, split: str = "test"):
    """``evaluate.py FILE --mc-samples 10``'s figures: the run's seed, CPU, one torch thread.

    :return: the :class:`~agents.evaluation.EvaluationResult` and the report of ``evaluate.py --json``.
    """
    from agents.policies import evaluate_checkpoint

    seed = payload["config"].get("seed", 0)
    with torch_threads(1):
        return evaluate_checkpoint(payload, split=split, mc_samples=mc_samples, device="cpu", seed=seed)


def _training_figures(payload: dict[str, Any]) -> dict[str, Any]:
    config = payload["config"]
    updates = payload.get("global_step")
    batch = payload.get("batch_size", config.get("batch_size"))
    mc = int(config.get("mc_samples", 1)) if payload["algo"] == "ram" else 1
    images = None if updates is None or batch is None else int(updates) * int(batch)
    wall = payload.get("wall_time")
    budget = config.get("time_limit") if payload["algo"] == "ram" else config.get("minutes")
    if (payload.get("provenance") or {}).get("sessions"):
        # A resumed run: --time-limit is per invocation (the saved one is the last invocation's), so the run as a
        # whole had no single budget; "88 min of 80" in the table misread the last limit as the run's.
        budget = None
    return {
        "wall_time_s": None if wall is None else round(float(wall), 1),
        "budget_min": None if budget is None else float(budget),
        "updates": None if updates is None else int(updates),
        "batch_size": None if batch is None else int(batch),
        "mc_samples": mc,
        "images_seen": images,
        "episodes_seen": None if images is None else images * mc,
    }


def _best_validation(payload: dict[str, Any]) -> tuple[float | None, int | None]:
    best = payload.get("best_val")
    history = [r for r in payload.get("history") or [] if "val_error_mean_location" in r]
    if best is None and history:
        best = min(r["val_error_mean_location"] for r in history)
    if best is None or not math.isfinite(best):
        return None, None
    epoch = next((r.get("epoch") for r in history if r["val_error_mean_location"] == best), payload.get("epoch"))
    return round(float(best), 4), None if epoch is None else int(epoch)


def build_entry(
    path: str | os.PathLike,
    *,
    root: Path = REPO_ROOT,
    trained_at: str | None = None,
    hardware: str | None = None,
    figures_dir: str | os.PathLike | None = "results/paper",
    mc_samples: int = MC_SAMPLES,
) -> dict[str, Any]:
    """Load, fingerprint and evaluate one checkpoint; write its figures; return its manifest entry.

    :param trained_at: the commit it was trained at, where the checkpoint records none (``--trained-at``).
    :param hardware: the hardware it was trained on, where the checkpoint records none (``--hardware``).
    :param figures_dir: where ``<row>/curve.png`` (validation error against wall time, from the checkpoint's
        history) and ``<row>/glimpses.png`` (glimpse paths on test images; not for the whole-image controls) go,
        relative to ``root``; ``None`` writes none.
    """
    payload = load_checkpoint(path)
    provenance = payload.get("provenance") or {}
    result, report = evaluate_for_manifest(payload, mc_samples=mc_samples)
    best_val, best_epoch = _best_validation(payload)
    env_kwargs = payload["env_kwargs"]
    is_ram = payload["algo"] == "ram"
    policy = payload.get("model_args", {}).get("config", {}).get("location_policy", "learned") if is_ram else None
    entry = {
        "file": relative_file(path, root),
        "sha256": sha256_of(path),
        "bytes": Path(path).stat().st_size,
        "row": row_name(payload),
        "kind": "ram" if is_ram else "control" if payload["algo"] in ("fc", "conv") else "sb3",
        "algo": payload["algo"],
        "task": TASK_NAMES.get(payload["env_id"], payload["env_id"]),
        "env_id": payload["env_id"],
        "env_kwargs": env_kwargs,
        "preset": preset_of(payload["config"]) if is_ram else payload["config"].get("preset"),
        "glimpses": int(env_kwargs["glimpses"]) if payload["algo"] not in ("fc", "conv") else None,
        "location_policy": policy,
        "seed": int(payload["config"].get("seed", 0)),
        "best_val_error": best_val,
        "best_epoch": best_epoch,
        "test": {
            "split": "test",
            "images": int(result.images),
            "mc_samples": int(result.mc_samples),
            "seed": int(payload["config"].get("seed", 0)),
            "deterministic": bool(report.get("deterministic", False)),
            **{key: round(float(getattr(result, key)), 4) for key in ERROR_KEYS},
        },
        "training": _training_figures(payload),
        "hardware": _as_text(provenance.get("hardware") or hardware or "unknown"),
        "trained_at": _as_text(provenance.get("git_commit") or trained_at or "unknown"),
        "figures": {"curve": None, "glimpses": None},
    }
    if figures_dir is not None:
        entry["figures"] = write_figures(payload, result, entry["row"], Path(figures_dir), root)
    return entry


def write_figures(payload: dict[str, Any], result, row: str, figures_dir: Path, root: Path) -> dict[str, str | None]:
    """``<figures_dir>/<row>/curve.png`` and (for agents that glimpse) ``glimpses.png``; paths relative to root."""
    from agents.figures import plot_glimpse_grid, plot_training_curve
    from ram_env.task import Task, TaskConfig

    folder = root / figures_dir / row
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, str | None] = {"curve": None, "glimpses": None}
    history = [r for r in payload.get("history") or [] if "wall_time" in r and "val_error_mean_location" in r]
    if history:
        ylabel = "validation error, %" + (" (mean locations)" if payload["algo"] == "ram" else "")
        plot_training_curve(
            {"validation error": history}, folder / "curve.png", title=f"{row}: {payload['env_id']}", ylabel=ylabel
        )
        out["curve"] = (figures_dir / row / "curve.png").as_posix()
    if result.locations.shape[1]:
        task = Task(TaskConfig.from_kwargs(**{**payload["env_kwargs"], "split": "test"}))
        plot_glimpse_grid(result, task, folder / "glimpses.png")
        out["glimpses"] = (figures_dir / row / "glimpses.png").as_posix()
    return out


# -------------------------------------------------------------------------------------------------------- manifest


def empty_manifest() -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": VERSION,
        "evaluation": {
            "split": "test",
            "mc_samples": MC_SAMPLES,
            "device": "cpu",
            "threads": 1,
            "seed": "the run's seed (config.seed)",
            "command": "python evaluate.py FILE --mc-samples 10",
        },
        "entries": [],
    }


def load_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The manifest at ``path`` (an empty one if the file does not exist)."""
    path = Path(path)
    if not path.is_file():
        return empty_manifest()
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise UserError(f"{path} is not a version {VERSION} manifest of this project")
    return manifest


def save_manifest(manifest: dict[str, Any], path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    manifest["entries"] = sorted(manifest["entries"], key=lambda e: e["file"])
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def add_entry(path: str | os.PathLike, entry: dict[str, Any]) -> dict[str, Any]:
    """Upsert ``entry`` into the manifest file at ``path``, re-read under an exclusive lock, and save it.

    An entry takes minutes to evaluate; a caller that upserted into the copy it loaded before then would overwrite the
    entries another ``build_manifest.py`` added meanwhile (two runs side by side lost one that way). Returns the
    manifest as saved.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(path.suffix + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        manifest = upsert(load_manifest(path), entry)
        save_manifest(manifest, path)
    return manifest


def upsert(manifest: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    """Replace the entry of the same ``file``, or add it."""
    manifest["entries"] = [e for e in manifest["entries"] if e["file"] != entry["file"]] + [entry]
    return manifest


def validate_entry(entry: dict[str, Any]) -> list[str]:
    """Problems with an entry's fields and types (an empty list when it is well formed)."""
    name = entry.get("file")
    problems = []
    for fields, record in (
        (ENTRY_FIELDS, entry),
        (TEST_FIELDS, entry.get("test")),
        (TRAINING_FIELDS, entry.get("training")),
    ):
        if not isinstance(record, dict):
            continue  # reported as a wrong type of "test" / "training" above
        for key, types in fields.items():
            if key not in record:
                problems.append(f"{name}: missing {key}")
            elif not isinstance(record[key], types) or (isinstance(record[key], bool) and bool not in types):
                problems.append(f"{name}: {key} is {type(record[key]).__name__}, expected {types}")
    test: dict = entry["test"] if isinstance(entry.get("test"), dict) else {}
    for key in ERROR_KEYS:
        value = test.get(key)
        if isinstance(value, (int, float)) and not 0.0 <= value <= 100.0:
            problems.append(f"{name}: test {key} = {value} is not a percentage")
    if test.get("deterministic") and len({test.get(k) for k in ERROR_KEYS}) != 1:
        problems.append(f"{name}: a deterministic model has three different test errors")
    return problems


def tolerance(images: int) -> float:
    """The largest accepted difference of a re-evaluated error: one image, in percentage points."""
    return 100.0 / images + 1e-6


def check_entry(entry: dict[str, Any], *, root: Path = REPO_ROOT, evaluate: bool = True) -> list[str]:
    """Compare an entry with its file: it exists, its sha256 matches and (``evaluate``) it scores the same."""
    problems = validate_entry(entry)
    path = root / entry["file"]
    if not path.is_file():
        return problems + [f"{entry['file']}: file missing"]
    if sha256_of(path) != entry["sha256"]:
        problems.append(f"{entry['file']}: sha256 differs from the manifest")
    if evaluate:
        payload = load_checkpoint(path)
        result, _ = evaluate_for_manifest(payload, mc_samples=entry["test"]["mc_samples"])
        limit = tolerance(result.images)
        for key in ERROR_KEYS:
            now, then = float(getattr(result, key)), float(entry["test"][key])
            if abs(now - then) > limit:
                problems.append(f"{entry['file']}: test {key} now {now:.4f}, manifest {then:.4f}")
    return problems


def check_manifest(manifest: dict[str, Any], *, root: Path = REPO_ROOT, files: list[str] | None = None) -> list[str]:
    """Re-check every entry (or those whose ``file`` is in ``files``); returns the problems found."""
    problems = []
    for entry in manifest["entries"]:
        if files is None or entry["file"] in files:
            problems += check_entry(entry, root=root)
    return problems
