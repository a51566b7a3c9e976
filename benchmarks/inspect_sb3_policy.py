"""What a trained stable-baselines3 model's deterministic policy does: does its action depend on the image at all?

python benchmarks/inspect_sb3_policy.py runs/bench_sb3/td3__1/last.pt --images 1000 --json results/x.json

Replays the deterministic (mean-action) episodes of the first N images of the validation split through the shared
evaluation loop and reports, per glimpse, the mean and spread (standard deviation across images) of the chosen
locations, and for the last step the classes named (how many images each) and, for the ``box`` action form, the class
scores: their spread across images and the share at the edge of the action space (|a| > 0.99, a saturated tanh). A
policy that ignores its input names one class for every image, with a spread near zero.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from agents.checkpoint import load_checkpoint
from agents.evaluation import EvaluationResult, evaluate_policy
from agents.sb3.algorithms import load_sb3_model
from agents.sb3.evaluation import SB3Policy
from agents.threads import set_threads
from ram_env.actions import ActionForm
from ram_env.task import Task, TaskConfig


class _Recorder(SB3Policy):
    """An :class:`SB3Policy` that keeps the raw actions of its deterministic episodes, step by step."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.actions: dict[int, list[np.ndarray]] = {}
        predict = self.model.predict

        def recording_predict(obs, *, deterministic, **kw):
            actions, lstm = predict(obs, deterministic=deterministic, **kw)
            if deterministic:
                self.actions.setdefault(int(obs["t"][0]), []).append(np.asarray(actions, dtype=np.float64))
            return actions, lstm

        self.model.predict = recording_predict


def inspect(payload: dict, images: int) -> tuple[dict, EvaluationResult]:
    """The report (see the module docstring) and the evaluation it was recorded from, for a loaded SB3 checkpoint."""
    env_kwargs = {**payload["env_kwargs"], "split": "validation"}
    task = Task(TaskConfig.from_kwargs(**env_kwargs))
    form = ActionForm(env_kwargs.get("action_form", "box"), task.n_classes, env_kwargs.get("grid_size", 9))
    policy = _Recorder(load_sb3_model(payload), action_form=form, observation_form=payload["observation_form"])
    torch.manual_seed(0)
    result = evaluate_policy(policy, env_kwargs, mc_samples=1, max_images=images, seed=0)
    steps = sorted(policy.actions)
    per_step = {t: np.concatenate(policy.actions[t])[: result.images] for t in steps}  # (images, action dims)
    locations = []
    for t in steps[:-1]:
        decoded, _ = form.decode(per_step[t], batch=len(per_step[t]), check=False)
        loc = decoded.numpy()  # (images, 2)
        locations.append({"t": t, "mean": loc.mean(0).round(3).tolist(), "std": loc.std(0).round(3).tolist()})
    last = per_step[steps[-1]]
    _, labels = form.decode(last, batch=len(last), check=False)
    report = {
        "algo": payload["algo"],
        "num_timesteps": payload.get("num_timesteps"),
        "images": result.images,
        "error_mean_location": round(result.error_mean_location, 2),
        "next_location": locations,
        "classes_named": np.bincount(labels.numpy(), minlength=task.n_classes).tolist(),
    }
    if form.name == "box":
        scores = last[:, 2:]  # (images, n_classes)
        report["class_score_std_across_images"] = round(float(scores.std(0).mean()), 4)
        report["class_score_share_saturated"] = round(float((np.abs(scores) > 0.99).mean()), 4)
        report["class_score_mean"] = scores.mean(0).round(3).tolist()
    return report, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="an SB3 run's last.pt or best.pt")
    parser.add_argument("--images", type=int, default=1000, help="the first N validation images")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    set_threads(1)
    payload = load_checkpoint(args.checkpoint)
    if payload["algo"] in ("ram", "fc", "conv"):
        raise SystemExit(f"{args.checkpoint} is a {payload['algo']} checkpoint; this script reads SB3 models")
    report, _ = inspect(payload, args.images)
    report = {"checkpoint": str(args.checkpoint), **report}
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
