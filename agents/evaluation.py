"""Scoring an agent on a whole validation or test split, three ways, with one loop for every kind of agent.

* **sampled**: each episode's locations are sampled from the policy (as in training); the error is averaged over all
  ``M`` sampled episodes of every image.
* **mean location**: every glimpse is taken at the policy's mean (deterministic).
* **Monte Carlo**: the ``M`` sampled episodes of an image vote: their class distributions are averaged before the
  argmax (from Ba et al. 2015; not in the RAM paper) when the policy gives one, else the most frequent class wins
  (stable-baselines3 policies, whose action heads expose no common class distribution). The report says which. It
  can hide a poor policy, so all three are reported.

Every agent is seen through :class:`GlimpsePolicy` (the RAM agent through :class:`RAMPolicy`, a stable-baselines3
model through ``agents.sb3.SB3Policy``) and scored by :func:`evaluate_policy`: every image of the split exactly once,
in an ordered pass of the vector environment whose repeats past the end of the split (the last batch wraps around)
are dropped by image index.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from agents.ram import RecurrentAttentionModel
from agents.rollout import EpisodeRunner
from ram_env.seeding import stream_seed
from ram_env.task import Task, TaskConfig
from ram_env.vector import GlimpseVectorEnv

#: How :attr:`EvaluationResult.monte_carlo` combines the M sampled episodes of an image.
MC_AVERAGE, MC_VOTE = "averaged class distributions", "majority vote"

#: Distinct images per batch on a CPU (where a larger batch adds nothing but memory).
CPU_BATCH_IMAGES = 1000
#: Episodes (images x M) per batch on a GPU. An eager batch costs about the same there whatever its size (the GPU
#: waits on kernel launches), so a pass takes few, large batches: a 10,000-image split at M = 1 in one.
CUDA_BATCH_EPISODES = 16384


def default_batch_images(device: torch.device, mc_samples: int) -> int:
    """Distinct images per evaluation batch when the caller names none: :data:`CPU_BATCH_IMAGES` on a CPU,
    ``CUDA_BATCH_EPISODES // mc_samples`` on a GPU.

    The batching decides which random initial location each image gets, so one checkpoint's figures differ a little
    between batchings (and between devices, whose random streams differ anyway); on one device they are repeatable.
    """
    if device.type == "cpu":
        return CPU_BATCH_IMAGES
    return max(1, CUDA_BATCH_EPISODES // mc_samples)


@dataclass
class Decision:
    """What a policy decides at one step for a batch of ``N`` episodes.

    ``location`` ``(N, 2)``: where the next glimpse goes (ignored at the last step). At the last step, ``probs``
    ``(N, n_classes)`` (the class distribution) or, for a policy without one, ``label`` ``(N,)``.
    """

    location: torch.Tensor
    probs: torch.Tensor | None = None
    label: torch.Tensor | None = None


class GlimpsePolicy(Protocol):
    """The interface :func:`evaluate_policy` scores: an agent that looks, then names a class.

    Observations are the vector environment's torch dict: ``glimpse`` ``(N, k, C, g, g)``, ``location`` ``(N, 2)``,
    ``t`` ``(N,)``; every episode of a batch is at the same step.
    """

    #: True if the last :class:`Decision` holds ``probs`` (Monte Carlo then averages them), False if ``label``.
    class_distribution: bool

    def initial_state(self, n: int, device: torch.device) -> Any:
        """The memory of ``n`` new episodes."""
        ...

    def act(
        self,
        obs: dict[str, torch.Tensor],
        state: Any,
        *,
        last: bool,
        deterministic: bool,
        generator: torch.Generator,
    ) -> tuple[Decision, Any]:
        """The decision at this step and the new state. ``deterministic``: the policy's mean/mode location;
        otherwise sample, drawing from ``generator`` where the policy can."""
        ...


class RAMPolicy:
    """The RAM agent as a :class:`GlimpsePolicy`: the same per-step decisions as the training rollout
    (:meth:`RecurrentAttentionModel.next_location`), the class distribution from the action network."""

    class_distribution = True

    def __init__(self, model: RecurrentAttentionModel):
        self.model = model

    def initial_state(self, n: int, device: torch.device) -> None:
        return None  # the core's zero state, as in the training rollout (its first step skips a product)

    def act(self, obs, state, *, last, deterministic, generator):
        h_t, state = self.model.step(obs["glimpse"], obs["location"], state)
        if last:
            probs = torch.softmax(self.model.classify(h_t), dim=1)  # (N, n_classes)
            return Decision(location=torch.zeros_like(obs["location"]), probs=probs), state
        _, l_next = self.model.next_location(h_t, deterministic=deterministic, generator=generator)
        return Decision(location=l_next.clamp(-1.0, 1.0)), state


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
    monte_carlo: str = MC_AVERAGE  # how the M samples of an image were combined

    def per_class_error(self, n_classes: int, kind: str = "monte_carlo") -> list[float]:
        """Error in percent for each class (NaN for a class absent from the split).

        :param kind: ``"monte_carlo"`` (the M-sample predictions) or ``"mean_location"`` (the deterministic pass).
        """
        if kind not in ("monte_carlo", "mean_location"):
            raise ValueError(f"unknown kind of error {kind!r}; choose monte_carlo or mean_location")
        predictions = self.predictions if kind == "monte_carlo" else self.predictions_mean_location
        out = []
        for c in range(n_classes):
            mask = self.labels == c
            out.append(float(100.0 * (predictions[mask] != c).mean()) if mask.any() else math.nan)
        return out

    def confusion(self, n_classes: int) -> np.ndarray:
        """``(n_classes, n_classes)`` counts, rows true class, columns Monte Carlo prediction."""
        matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
        np.add.at(matrix, (self.labels, self.predictions), 1)
        return matrix


def play(
    policy: GlimpsePolicy, runner: EpisodeRunner, *, deterministic: bool, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One batch of evaluation episodes from the runner's pending observation.

    :return: ``index`` and ``labels`` ``(N,)`` of the images, the ``(N, n_classes)`` class distributions (one-hot of
        the named class for a policy without one), and the glimpse ``locations`` ``(N, T, 2)``.
    """
    env, obs, info = runner.env, runner.obs, runner.info
    n, steps = env.num_envs, env.config.glimpses
    index, labels = info["index"], info["label"]
    state = policy.initial_state(n, env.device)
    locations = []
    decision = None
    for t in range(steps):
        locations.append(obs["location"])
        last = t == steps - 1
        decision, state = policy.act(obs, state, last=last, deterministic=deterministic, generator=generator)
        if last:
            if decision.probs is not None:
                probs = decision.probs.float()
            else:
                assert decision.label is not None, "a policy's last decision names a class or gives probabilities"
                probs = torch.nn.functional.one_hot(decision.label.long(), env.task.n_classes).float()
            label = probs.argmax(dim=1)
        else:
            label = torch.zeros(n, dtype=torch.long, device=env.device)
        obs, _, _, _, info = env.step({"location": decision.location, "label": label})
    runner.obs, runner.info = obs, info
    return index, labels, probs, torch.stack(locations, dim=1)


@torch.no_grad()
def evaluate_policy(
    policy: GlimpsePolicy,
    env_kwargs: dict,
    *,
    device: torch.device | str = "cpu",
    mc_samples: int = 10,
    batch_images: int | None = None,
    seed: int = 0,
    max_images: int | None = None,
) -> EvaluationResult:
    """Score ``policy`` on the split named in ``env_kwargs`` (an ordered pass; see the module docstring).

    :param env_kwargs: :class:`~ram_env.task.TaskConfig` fields (``split`` should be validation or test); the
        action form is replaced by ``"dict"`` (policies give locations and classes) and the reward by ``"correct"``.
    :param batch_images: distinct images per batch of episodes (default: :func:`default_batch_images`, per pass).
    :param seed: the evaluation's seed; the initial locations and the location noise draw from two independent
        streams derived from it (:func:`ram_env.seeding.stream_seed`), so a score is repeatable.
    :param max_images: score only the first ``max_images`` images of the split (quick checks).
    """
    device = torch.device(device)
    # Scores come from the named classes against the labels, not from the reward, which is set to the paper's: a
    # policy trained with reward="softmax" (box actions only) is scored through the "dict" form like any other.
    kwargs = {**env_kwargs, "ordered": True, "action_form": "dict", "reward": "correct"}
    task = Task(TaskConfig.from_kwargs(**kwargs))
    n_data = len(task.data)
    n = min(n_data, max_images) if max_images else n_data
    env_seed = stream_seed(seed, "eval/env")  # the same initial locations in both passes
    generator = torch.Generator(device=device).manual_seed(stream_seed(seed, "eval/noise"))

    def ordered_pass(m: int, deterministic: bool):
        # No more distinct images per batch than the split holds, so an image never appears twice in one batch.
        images = min(batch_images or default_batch_images(device, m), n)
        runner = EpisodeRunner(GlimpseVectorEnv(images * m, device=device, mc_samples=m, **kwargs), env_seed)
        seen = torch.zeros(n, dtype=torch.bool, device=device)
        for _ in range(math.ceil(n / images)):
            index, labels, probs, locations = play(policy, runner, deterministic=deterministic, generator=generator)
            keep = index < n  # drops images past max_images
            keep[keep.clone()] = ~seen[index[keep]]  # and wrapped repeats (all M copies of a new image stay)
            seen[index[keep]] = True
            yield index[keep], labels[keep], probs[keep], locations[keep]
        assert bool(seen.all()), "an ordered pass missed images"

    labels = torch.zeros(n, dtype=torch.long, device=device)
    n_classes = task.n_classes
    prob_sum = torch.zeros(n, n_classes, device=device)
    wrong = torch.zeros(n, device=device)
    for index, truth, probs, _ in ordered_pass(mc_samples, deterministic=False):
        labels[index] = truth
        prob_sum.index_add_(0, index, probs)
        wrong.index_add_(0, index, (probs.argmax(1) != truth).float())
    pred_mean = torch.zeros(n, dtype=torch.long, device=device)
    paths = torch.zeros(n, int(kwargs["glimpses"]), 2, device=device)
    for index, _, probs, locations in ordered_pass(1, deterministic=True):
        pred_mean[index] = probs.argmax(1)
        paths[index] = locations.float()
    pred_mc = prob_sum.argmax(1)  # for one-hot votes: the most frequent class (ties: the lowest index)
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
        monte_carlo=MC_AVERAGE if policy.class_distribution else MC_VOTE,
    )


def evaluate_model(model: RecurrentAttentionModel, env_kwargs: dict, **kwargs: Any) -> EvaluationResult:
    """:func:`evaluate_policy` for a RAM agent (in eval mode for the pass; its mode is restored after)."""
    was_training = model.training
    model.eval()
    try:
        return evaluate_policy(RAMPolicy(model), env_kwargs, **kwargs)
    finally:
        model.train(was_training)


def make_report(payload: dict, result: EvaluationResult, split: str, n_classes: int) -> dict:
    """The JSON summary ``evaluate.py`` writes."""
    return {
        "env_id": payload["env_id"],
        "env_kwargs": {**payload["env_kwargs"], "split": split},
        "algo": payload["algo"],
        "split": split,
        "episodes": result.images,
        "mc_samples": result.mc_samples,
        "monte_carlo": result.monte_carlo,
        "error_sampled": result.error_sampled,
        "error_mean_location": result.error_mean_location,
        "error_monte_carlo": result.error_monte_carlo,
        "per_class_error_mean_location": result.per_class_error(n_classes, "mean_location"),
        "per_class_error_monte_carlo": result.per_class_error(n_classes, "monte_carlo"),
        "checkpoint_epoch": payload.get("epoch"),
    }


def distance_to_object(result: EvaluationResult, task: Task) -> np.ndarray:
    """How far each mean-location glimpse lands from the object: ``(images, T)`` pixel distances.

    The distance from a glimpse's centre to the centre of the example's image on its canvas (where the translated or
    cluttered task put the digit), as the larger of the horizontal and vertical offsets, so a distance of at most
    ``g / 2`` puts that centre inside the first, full-resolution ``g x g`` patch. Needs the fixed canvases of a
    validation or test split (the ones :func:`evaluate_policy` scores), since a training canvas is drawn anew.

    :param result: an evaluation of ``task``'s split (its ``locations`` are the mean-location paths, in split order).
    """
    if not task.config.is_ordered:
        raise ValueError("distance_to_object needs the fixed canvases of a validation or test split, not train")
    layout = task.fixed_layout
    centre = np.asarray(layout.position[: result.images], dtype=np.float64) + np.array(
        [task.image_w / 2.0, task.image_h / 2.0]
    )  # (images, 2): the image's centre (x, y) on the canvas, in pixels
    extent = np.array([task.canvas_w, task.canvas_h], dtype=np.float64)
    glimpse = (result.locations.astype(np.float64) + 1.0) / 2.0 * extent  # (images, T, 2), as the sensor maps them
    return np.abs(glimpse - centre[:, None, :]).max(axis=2)
