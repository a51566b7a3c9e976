"""Where a trained RAM agent's glimpses land relative to the digit, step by step, on a fixed split.

python benchmarks/glimpse_on_target.py checkpoints/cluttered100-6g-gpu.pt --images 2000 \
    --json results/glimpse_on_target/cluttered100-6g-gpu.json

For each glimpse of the mean-location paths: the median distance (in pixels, the larger of the horizontal and vertical
offsets) from the glimpse's centre to the centre of the digit on its canvas, and the share of images where the digit's
centre falls inside the first, full-resolution patch (distance at most g / 2) and inside the second (g s / 2), for the
images the agent classified right and wrong. A policy that has learned to find the digit brings most paths onto it;
one that classifies from the coarse, wide patches does not (``agents.evaluation.distance_to_object``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from agents.checkpoint import load_checkpoint
from agents.evaluation import distance_to_object, evaluate_model
from agents.ram import RecurrentAttentionModel
from agents.threads import set_threads
from ram_env.task import Task, TaskConfig


def summarise(distances: np.ndarray, correct: np.ndarray, radius: float) -> dict:
    """Statistics of ``distances`` ``(images, T)`` against one ``radius``; ``correct`` ``(images,)`` bool."""

    def share(mask: np.ndarray) -> float | None:
        return round(float(mask.mean()), 4) if mask.size else None

    on = distances <= radius  # (images, T)
    ever = on[:, 1:].any(axis=1)  # (images,); the first glimpse's location is not the policy's choice
    return {
        "radius": radius,
        "on_target_right": [share(on[correct, t]) for t in range(on.shape[1])],
        "on_target_wrong": [share(on[~correct, t]) for t in range(on.shape[1])],
        "ever_on_target": share(ever),
        "ever_on_target_right": share(ever[correct]),
        "ever_on_target_wrong": share(ever[~correct]),
        "error_if_ever_on_target": share(~correct[ever]),
        "error_if_never_on_target": share(~correct[~ever]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="a RAM agent's checkpoint")
    parser.add_argument("--split", default="validation", choices=["validation", "test"])
    parser.add_argument("--images", type=int, default=2000, help="the first N images of the split")
    parser.add_argument("--seed", type=int, default=1, help="evaluation seed (the first glimpse's random location)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    set_threads(1)
    payload = load_checkpoint(args.checkpoint)
    if payload["algo"] != "ram":
        raise SystemExit(f"{args.checkpoint} is a {payload['algo']} checkpoint; this script reads RAM agents")
    model = RecurrentAttentionModel.from_args(payload["model_args"])
    model.load_state_dict(payload["model"])
    env_kwargs = {**payload["env_kwargs"], "split": args.split}
    with torch.no_grad():
        result = evaluate_model(model, env_kwargs, mc_samples=1, max_images=args.images, seed=args.seed)
    task = Task(TaskConfig.from_kwargs(**{**env_kwargs, "ordered": True}))
    distances = distance_to_object(result, task)
    correct = result.predictions_mean_location == result.labels
    g, scale = task.config.glimpse_size, task.config.scale
    radii = {"fovea": g / 2, "second_patch": g * scale / 2}  # the first two patches' half-widths
    report = {
        "checkpoint": str(args.checkpoint),
        "env_id": payload["env_id"],
        "env_kwargs": payload["env_kwargs"],
        "split": args.split,
        "images": result.images,
        "error_mean_location": round(result.error_mean_location, 2),
        "median_distance": [round(float(np.median(distances[:, t])), 2) for t in range(distances.shape[1])],
        **{name: summarise(distances, correct, radius) for name, radius in radii.items()},
    }
    print(f"{args.checkpoint}: {args.split}, {result.images} images, error {report['error_mean_location']} %")
    print(f"  median distance per glimpse (px): {report['median_distance']}")
    for name, radius in radii.items():
        r = report[name]
        print(
            f"  digit centre within {radius:g} px ({name}) per glimpse: right {r['on_target_right']}, wrong "
            f"{r['on_target_wrong']}; on some glimpse after the first: right {r['ever_on_target_right']}, wrong "
            f"{r['ever_on_target_wrong']}; error {r['error_if_ever_on_target']} then, {r['error_if_never_on_target']} "
            "if never"
        )
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
