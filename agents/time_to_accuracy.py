"""Time to accuracy: validation error against training seconds for one configuration, trained by the project's trainer.

:func:`time_to_accuracy` runs :class:`agents.trainer.RAMTrainer` (the trainer ``train_agent.py`` runs, with its
schedule, warmup, clipping and validation) for a fixed wall time, validating every ``validate_every_seconds``
(:attr:`~agents.config.TrainConfig.validate_every_seconds`) as well as at each epoch's end, and returns the
validation records as a curve. The time axis, ``train_seconds``, is the run's wall time at the start of each
validation *minus the time spent in the validations before it*: validation is measurement, not training, and its cost
does not depend on the batch size being compared. The budget itself (``seconds``) is wall time, validations included
(the trainer's ``time_limit``), so a run with more validations trains a little less.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from agents.config import TrainConfig, UserError, resolve_config
from agents.config import build_parser as build_train_parser
from agents.figures import plot_time_to_accuracy
from agents.runs import finite, hardware_name, resolve_device, write_json
from agents.threads import set_threads
from agents.trainer import RAMTrainer

#: validations per run when the configuration sets no ``validate_every_seconds``
DEFAULT_POINTS = 12


def curve_points(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The trainer's validation records as curve points, with ``train_seconds`` = wall time before the validation
    minus the earlier validations' time (see the module docstring).

    >>> history = [
    ...     {"train_time": 10.0, "validation_time": 2.0, "step": 5, "images": 640, "epoch": 0,
    ...      "val_error_mean_location": 50.0, "val_error_sampled": 55.0},
    ...     {"train_time": 22.0, "validation_time": 2.0, "step": 11, "images": 1408, "epoch": 0,
    ...      "val_error_mean_location": 20.0, "val_error_sampled": 25.0},
    ... ]
    >>> [p["train_seconds"] for p in curve_points(history)]
    [10.0, 20.0]
    """
    points, validating = [], 0.0
    for record in history:
        points.append(
            {
                "train_seconds": round(record["train_time"] - validating, 3),
                "wall_seconds": record["train_time"],
                "step": record["step"],
                "images": record["images"],
                "epoch": record["epoch"],
                "val_error_mean_location": record["val_error_mean_location"],
                "val_error_sampled": record["val_error_sampled"],
            }
        )
        validating += record["validation_time"]
    return points


def time_to_accuracy(config: TrainConfig, *, seconds: float, progress: bool = False) -> dict[str, Any]:
    """Train ``config`` (``algo`` must be ``ram``) for ``seconds`` of wall time and return the validation curve.

    The run directory is ``config.output`` if set (kept), else a temporary one (removed). ``config.epochs`` still
    applies: a run that finishes its epochs first stops there. Returns a JSON-ready dict: ``points`` (see
    :func:`curve_points`), the resolved ``config``, ``hardware``, ``provenance`` (git commit, torch, threads), ``date``,
    ``load_average`` at the start and the end, and the trainer's ``summary``.
    """
    if config.algo != "ram":
        raise UserError(f"time_to_accuracy trains the RAM agent (--algo ram), got --algo {config.algo}")
    if not seconds > 0:
        raise UserError(f"--seconds must be > 0, got {seconds}")
    interval = config.validate_every_seconds or seconds / DEFAULT_POINTS
    load_start = list(os.getloadavg())
    date = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    with tempfile.TemporaryDirectory(prefix="time_to_accuracy_") as scratch:
        output = config.output or str(Path(scratch) / "run")
        config = dataclasses.replace(
            config, time_limit=seconds / 60, validate_every_seconds=interval, output=output, resume=None
        )
        trainer = RAMTrainer(config, progress=progress)
        summary = trainer.run()
        history = list(trainer.history)
        trainer_provenance = dict(trainer.provenance)
    return finite(
        {
            "seconds": seconds,
            "date": date,
            "hardware": hardware_name(resolve_device(config.device)),
            "provenance": trainer_provenance,
            "threads": torch.get_num_threads(),
            "load_average": {"start": load_start, "end": list(os.getloadavg())},
            "config": dataclasses.asdict(config),
            "summary": summary,
            "points": curve_points(history),
        }
    )


def build_parser() -> argparse.ArgumentParser:
    """``train_agent.py``'s flags (a preset and any overrides) plus the benchmark's own."""
    parser = build_train_parser(prog="time_to_accuracy.py")
    parser.description = "Validation error against training seconds for one training configuration (RAM agent)."
    parser.add_argument("--seconds", type=float, default=240.0, help="wall-time budget of the run (default: 240)")
    parser.add_argument("--json", type=Path, required=True, help="write the curve and its provenance here")
    parser.add_argument("--png", type=Path, help="plot the curve here (default: the --json path with .png)")
    parser.add_argument("--label", help="this curve's legend label (default: batch size and learning rate)")
    parser.add_argument(
        "--plot-with", type=Path, nargs="*", default=[], help="earlier time_to_accuracy JSON files to draw beside it"
    )
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse the command line, fix the threads, run :func:`time_to_accuracy`, write the JSON and the PNG."""
    args = vars(build_parser().parse_args(argv))
    seconds, json_path, png_path, label = args.pop("seconds"), args.pop("json"), args.pop("png"), args.pop("label")
    others = args.pop("plot_with")
    args.pop("list_presets", None)
    config = resolve_config(args)
    set_threads(config.threads)
    result = time_to_accuracy(config, seconds=seconds, progress=False)
    result["label"] = label or _label(result["config"])
    write_json(json_path, result)
    curves = {result["label"]: result["points"]}
    for other in others:
        earlier = json.loads(other.read_text())
        curves[earlier.get("label") or _label(earlier["config"])] = earlier["points"]
    png = plot_time_to_accuracy(
        curves,
        png_path or json_path.with_suffix(".png"),
        title=f"{config.preset or config.env}, {result['hardware']}",
    )
    print(f"wrote {json_path} and {png}")
    return result


def _label(config: dict[str, Any]) -> str:
    warmup = f", warmup {config['warmup_updates']}" if config.get("warmup_updates") else ""
    return f"batch {config['batch_size']}, lr {config['learning_rate']:g}{warmup}"
