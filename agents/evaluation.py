"""Scoring a RAM agent on a whole validation or test split, three ways.

* **sampled**: each episode's locations are sampled from the policy (as in training); the error is averaged over all
  ``M`` sampled episodes of every image.
* **mean location**: every glimpse is taken at the policy's mean (deterministic).
* **Monte Carlo**: the class distributions of the ``M`` sampled episodes of an image are averaged before the argmax
  (from Ba et al. 2015; not in the RAM paper). It can hide a poor policy, so all three are reported.

Every image of the split is scored exactly once: the environment runs an ordered pass and repeats past the end of the
split (the last batch wraps around) are dropped by image index.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from agents.ram import RecurrentAttentionModel
from agents.rollout import EpisodeRunner, rollout
from ram_env.seeding import stream_seed
from ram_env.task import Task, TaskConfig
from ram_env.vector import GlimpseVectorEnv


@dataclass
class EvaluationResult:
    """Errors in percent over ``images`` images of a split, with per-image details for figures."""

    images: int
    mc_samples: int
    error_sampled: float
    error_mean_location: float
    error_monte_carlo: float
    labels: np.ndarray  # (images,) true classes, in split order
    predictions: np.ndarray  # (images,) Monte Carlo predictions
    predictions_mean_location: np.ndarray  # (images,)
    locations: np.ndarray  # (images, T, 2) mean-location glimpse paths

    def per_class_error(self, n_classes: int) -> list[float]:
        """Monte Carlo error in percent for each class (NaN for a class absent from the split)."""
        out = []
        for c in range(n_classes):
            mask = self.labels == c
            out.append(float(100.0 * (self.predictions[mask] != c).mean()) if mask.any() else math.nan)
        return out

    def confusion(self, n_classes: int) -> np.ndarray:
        """``(n_classes, n_classes)`` counts, rows true class, columns Monte Carlo prediction."""
        matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
        np.add.at(matrix, (self.labels, self.predictions), 1)
        return matrix


def _ordered_pass(model, env: GlimpseVectorEnv, *, deterministic: bool, seed: int, generator: torch.Generator):
    """Run ``ceil(n / images-per-batch)`` batches from the start of the split; yield each batch's trajectory."""
    runner = EpisodeRunner(env, seed=seed)
    n = env.images.shape[0]
    for _ in range(math.ceil(n / env.distinct_images)):
        yield rollout(model, runner, deterministic=deterministic, generator=generator)


@torch.no_grad()
def evaluate_model(
    model: RecurrentAttentionModel,
    env_kwargs: dict,
    *,
    device: torch.device | str = "cpu",
    mc_samples: int = 10,
    batch_images: int = 1000,
    seed: int = 0,
) -> EvaluationResult:
    """Score ``model`` on the split named in ``env_kwargs`` (an ordered pass; see the module docstring).

    :param env_kwargs: :class:`~ram_env.task.TaskConfig` fields (``split`` should be validation or test).
    :param batch_images: distinct images per batch of episodes.
    :param seed: the evaluation's seed; the initial locations and the location noise draw from two independent
        streams derived from it (:func:`ram_env.seeding.stream_seed`), so a score is repeatable.
    """
    was_training = model.training
    model.eval()
    device = torch.device(device)
    generator = torch.Generator(device=device)
    kwargs = {**env_kwargs, "ordered": True}
    # No more distinct images per batch than the split holds, so an image never appears twice in one batch.
    batch_images = min(batch_images, len(Task(TaskConfig.from_kwargs(**kwargs)).data))
    try:
        sampled_env = GlimpseVectorEnv(batch_images * mc_samples, device=device, mc_samples=mc_samples, **kwargs)
        n = sampled_env.images.shape[0]
        labels = sampled_env.labels  # (n,) on device
        n_classes = sampled_env.task.n_classes
        prob_sum = torch.zeros(n, n_classes, device=device)
        wrong = torch.zeros(n, device=device)
        seen = torch.zeros(n, dtype=torch.bool, device=device)
        env_seed = stream_seed(seed, "eval/env")  # the same initial locations in both passes
        generator.manual_seed(stream_seed(seed, "eval/noise"))
        for traj in _ordered_pass(model, sampled_env, deterministic=False, seed=env_seed, generator=generator):
            first = ~seen[traj.index]  # (N,) envs whose image is not scored yet (drops wrapped repeats)
            idx = traj.index[first]
            prob_sum.index_add_(0, idx, torch.softmax(traj.logits[first], dim=1))
            wrong.index_add_(0, idx, (traj.logits[first].argmax(1) != traj.labels[first]).float())
            seen[idx] = True
        mean_env = GlimpseVectorEnv(batch_images, device=device, **kwargs)
        pred_mean = torch.zeros(n, dtype=torch.long, device=device)
        paths = torch.zeros(n, mean_env.config.glimpses, 2, device=device)
        seen_mean = torch.zeros(n, dtype=torch.bool, device=device)
        for traj in _ordered_pass(model, mean_env, deterministic=True, seed=env_seed, generator=generator):
            first = ~seen_mean[traj.index]
            pred_mean[traj.index[first]] = traj.logits[first].argmax(1)
            paths[traj.index[first]] = traj.locations[first]
            seen_mean[traj.index[first]] = True
    finally:
        model.train(was_training)
    assert bool(seen.all()) and bool(seen_mean.all()), "an ordered pass missed images"
    pred_mc = prob_sum.argmax(1)
    return EvaluationResult(
        images=n,
        mc_samples=mc_samples,
        error_sampled=float(100.0 * wrong.sum() / (n * mc_samples)),
        error_mean_location=float(100.0 * (pred_mean != labels).float().mean()),
        error_monte_carlo=float(100.0 * (pred_mc != labels).float().mean()),
        labels=labels.cpu().numpy(),
        predictions=pred_mc.cpu().numpy(),
        predictions_mean_location=pred_mean.cpu().numpy(),
        locations=paths.cpu().numpy(),
    )


def evaluate_checkpoint(
    payload: dict, *, split: str = "test", mc_samples: int = 10, device: str | torch.device = "cpu", seed: int = 0
) -> tuple[EvaluationResult, dict]:
    """Rebuild the agent of a loaded checkpoint and score it on ``split``; returns the result and the JSON report."""
    if payload["algo"] in ("fc", "conv"):  # the paper's whole-image controls: deterministic, one figure
        from agents.controls import evaluate_control_checkpoint

        return evaluate_control_checkpoint(payload, split=split, device=device)
    if payload["algo"] != "ram":
        from agents.sb3 import evaluate_sb3_checkpoint

        return evaluate_sb3_checkpoint(payload, split=split, mc_samples=mc_samples, device=device, seed=seed)
    model = RecurrentAttentionModel.from_args(payload["model_args"])
    model.load_state_dict(payload["model"])
    model.to(device)
    env_kwargs = {**payload["env_kwargs"], "split": split}
    result = evaluate_model(model, env_kwargs, device=device, mc_samples=mc_samples, seed=seed)
    return result, make_report(payload, result, split, model.n_classes)


def make_report(payload: dict, result: EvaluationResult, split: str, n_classes: int) -> dict:
    """The JSON summary ``evaluate.py`` writes."""
    return {
        "env_id": payload["env_id"],
        "env_kwargs": {**payload["env_kwargs"], "split": split},
        "algo": payload["algo"],
        "split": split,
        "episodes": result.images,
        "mc_samples": result.mc_samples,
        "error_sampled": result.error_sampled,
        "error_mean_location": result.error_mean_location,
        "error_monte_carlo": result.error_monte_carlo,
        "per_class_error": result.per_class_error(n_classes),
        "checkpoint_epoch": payload.get("epoch"),
    }
