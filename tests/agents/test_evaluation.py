"""The evaluation loop (agents.evaluation): independent random streams, every image once, Monte Carlo that averages
class distributions or votes, identical figures for the RAM agent through its policy wrapper."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.evaluation import Decision, evaluate_policy

TINY = dict(dataset="tiny", glimpses=3, glimpse_size=4, num_scales=2, canvas_size=24, split="validation")


class _ProbePolicy:
    """Looks at the centre, names class 0, and records the initial locations and the first noise it would draw."""

    class_distribution = True

    def __init__(self) -> None:
        self.initial, self.noise = [], []

    def initial_state(self, n, device):
        return None

    def act(self, obs, state, *, last, deterministic, generator):
        n = obs["location"].shape[0]
        if int(obs["t"][0]) == 0 and not deterministic:
            self.initial.append(obs["location"].clone())
            self.noise.append(torch.randn(n, 2, generator=generator))
        probs = torch.nn.functional.one_hot(torch.zeros(n, dtype=torch.long), 4).float() if last else None
        return Decision(location=torch.zeros(n, 2), probs=probs), state


def test_initial_locations_and_location_noise_are_independent_streams():
    probe = _ProbePolicy()
    evaluate_policy(probe, TINY, mc_samples=16, seed=3)  # 64 images x 16 episodes
    initial = torch.cat(probe.initial).numpy()  # (n, 2)
    noise = torch.cat(probe.noise).numpy()
    assert len(initial) == 1024
    # Seeding both from one number makes them strongly correlated (about -0.4 on MNIST's validation pass).
    for axis in range(2):
        r = np.corrcoef(initial[:, axis], noise[:, axis])[0, 1]
        assert abs(r) < 4 / np.sqrt(len(initial)), (axis, r)  # 4 standard errors of a zero correlation


class _SplitVotePolicy:
    """In each group of 3 sampled episodes of an image, one is sure of class 0 and two lean to class 1: averaging the
    distributions picks 0, a majority vote picks 1. Deterministic episodes lean to class 2."""

    def __init__(self, class_distribution: bool) -> None:
        self.class_distribution = class_distribution

    def initial_state(self, n, device):
        return None

    def act(self, obs, state, *, last, deterministic, generator):
        n = obs["location"].shape[0]
        if not last:
            return Decision(location=torch.zeros(n, 2)), state
        probs = torch.zeros(n, 4)
        if deterministic:
            probs[:, 2] = 1.0
        else:
            sure = torch.arange(n) % 3 == 0  # the vector env shows each image to M = 3 consecutive episodes
            probs[sure, 0] = 1.0
            probs[~sure, 0], probs[~sure, 1] = 0.4, 0.6
        if self.class_distribution:
            return Decision(location=torch.zeros(n, 2), probs=probs), state
        return Decision(location=torch.zeros(n, 2), label=probs.argmax(1)), state


def test_monte_carlo_averages_distributions_or_votes_and_says_which():
    averaged = evaluate_policy(_SplitVotePolicy(True), TINY, mc_samples=3, seed=0)
    voted = evaluate_policy(_SplitVotePolicy(False), TINY, mc_samples=3, seed=0)
    assert averaged.images == voted.images == 64
    assert (averaged.predictions == 0).all() and averaged.monte_carlo == "averaged class distributions"
    assert (voted.predictions == 1).all() and voted.monte_carlo == "majority vote"
    assert (averaged.predictions_mean_location == 2).all()
    # Sampled error counts every episode: a third of them name class 0, two thirds class 1.
    labels = averaged.labels
    expected = 100 * np.mean([(1 / 3) * (y != 0) + (2 / 3) * (y != 1) for y in labels])
    assert abs(averaged.error_sampled - expected) < 1e-4
    assert abs(averaged.error_monte_carlo - 100 * np.mean(labels != 0)) < 1e-4


def test_every_image_is_scored_once_whatever_the_batch():
    for batch_images in (7, 64):
        result = evaluate_policy(_SplitVotePolicy(True), TINY, mc_samples=3, batch_images=batch_images)
        assert result.images == 64
        assert np.bincount(result.labels, minlength=4).sum() == 64
    first = evaluate_policy(_SplitVotePolicy(True), TINY, mc_samples=3, batch_images=7)
    second = evaluate_policy(_SplitVotePolicy(True), TINY, mc_samples=3, batch_images=64)
    assert (first.labels == second.labels).all()  # split order, whatever the batching
    assert first.error_sampled == second.error_sampled  # the last batch's wrapped repeats are not counted


def test_default_batch_keeps_1000_images_on_cpu_and_fills_a_gpu_batch_per_pass():
    from agents.evaluation import CUDA_BATCH_EPISODES, default_batch_images

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert default_batch_images(cpu, 1) == default_batch_images(cpu, 10) == 1000  # CPU figures stay as shipped
    assert default_batch_images(cuda, 1) == CUDA_BATCH_EPISODES  # a 10,000-image pass at M = 1: one batch
    assert default_batch_images(cuda, 10) * 10 <= CUDA_BATCH_EPISODES < (default_batch_images(cuda, 10) + 1) * 10
    assert default_batch_images(cuda, 10**6) == 1
    # The default on CPU is exactly batch_images=1000, so shipped CPU evaluations reproduce.
    default = evaluate_policy(_SplitVotePolicy(True), TINY, mc_samples=3)
    explicit = evaluate_policy(_SplitVotePolicy(True), TINY, mc_samples=3, batch_images=1000)
    assert default.error_sampled == explicit.error_sampled and (default.labels == explicit.labels).all()


class _FixedLookPolicy:
    """Looks at one fixed location after the first glimpse, names class 0."""

    class_distribution = True

    def __init__(self, location: tuple[float, float]) -> None:
        self.location = torch.tensor(location)

    def initial_state(self, n, device):
        return None

    def act(self, obs, state, *, last, deterministic, generator):
        n = obs["location"].shape[0]
        probs = torch.nn.functional.one_hot(torch.zeros(n, dtype=torch.long), 4).float() if last else None
        return Decision(location=self.location.expand(n, 2), probs=probs), state


def test_distance_to_object_measures_from_each_images_own_digit():
    from agents.evaluation import distance_to_object
    from ram_env.task import Task, TaskConfig

    result = evaluate_policy(_FixedLookPolicy((0.5, -0.5)), TINY, mc_samples=1, seed=0)
    task = Task(TaskConfig.from_kwargs(**{**TINY, "ordered": True}))
    distances = distance_to_object(result, task)
    assert distances.shape == (result.images, 3)
    # (0.5, -0.5) on a 24-pixel canvas is pixel (18, 6); the digit's centre is its top-left corner + half its size.
    position = np.asarray(task.fixed_layout.position, dtype=np.float64)  # (images, 2) top-left (x, y)
    centre_x, centre_y = position[:, 0] + task.image_w / 2, position[:, 1] + task.image_h / 2
    expected = np.maximum(np.abs(18.0 - centre_x), np.abs(6.0 - centre_y))
    assert len(set(expected.round(3))) > 3  # the canvases differ, so a shifted or swapped layout shows
    np.testing.assert_allclose(distances[:, 1], expected, atol=1e-4)
    np.testing.assert_allclose(distances[:, 2], expected, atol=1e-4)
    with pytest.raises(ValueError, match="validation or test split"):
        distance_to_object(result, Task(TaskConfig.from_kwargs(**{**TINY, "split": "train"})))
