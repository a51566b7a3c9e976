"""Scoring (agents/evaluation.py): the Monte Carlo prediction averages the class distributions of the M samples."""

from __future__ import annotations

import pytest
import torch

import agents.evaluation
from agents.evaluation import evaluate_model
from agents.ram import RAMConfig, RecurrentAttentionModel
from agents.rollout import EpisodeRunner, Trajectory

TINY = {"dataset": "tiny", "glimpses": 2, "glimpse_size": 4, "num_scales": 1, "split": "validation"}

# Class probabilities of the M = 3 sampled episodes of an image, for its true class B and one wrong class A:
# two samples lean to A, one is sure of B. Majority vote and the last sample say A; the average says B.
#                  A     B
SAMPLES = torch.tensor([[0.01, 0.97], [0.50, 0.45], [0.50, 0.45]])


def _scripted_rollout(model, runner: EpisodeRunner, *, deterministic: bool = False, generator=None) -> Trajectory:
    """Play the batch (so the ordered pass advances) and return logits from :data:`SAMPLES`, not from a model."""
    env = runner.env
    n, steps, m = env.num_envs, env.config.glimpses, env.mc_samples
    labels, index = runner.info["label"].clone(), runner.info["index"].clone()
    action = {"location": torch.zeros(n, 2), "label": torch.zeros(n, dtype=torch.long)}
    for _ in range(steps):
        runner.obs, _, _, _, runner.info = env.step(action)
    n_classes = env.task.n_classes
    probs = torch.full((n, n_classes), 0.0)
    sample = SAMPLES[torch.arange(n) % m] if not deterministic else SAMPLES[:1].expand(n, 2)
    wrong = (labels + 1) % n_classes
    probs[torch.arange(n), wrong] = sample[:, 0]
    probs[torch.arange(n), labels] = sample[:, 1]
    probs += (1 - probs.sum(1, keepdim=True)) / (n_classes - 2) * (probs == 0)  # the rest spread evenly
    return Trajectory(
        logits=probs.log(),
        locations=torch.zeros(n, steps, 2),
        means=torch.zeros(n, steps - 1, 2),
        log_pi=torch.zeros(n, steps - 1),
        baseline=torch.zeros(n, steps - 1),
        reward=torch.zeros(n),
        labels=labels,
        index=index,
    )


def test_monte_carlo_prediction_is_the_argmax_of_the_averaged_probabilities(monkeypatch):
    monkeypatch.setattr(agents.evaluation, "rollout", _scripted_rollout)
    model = RecurrentAttentionModel((1, 1, 4, 4), 4, RAMConfig(hidden_size=4, glimpse_hidden=4, glimpse_out=4))
    result = evaluate_model(model, TINY, mc_samples=3, batch_images=16)
    assert result.images == 64
    assert result.error_monte_carlo == 0.0  # a majority vote or the last sample would give 100 %
    assert (result.predictions == result.labels).all()
    assert result.error_sampled == pytest.approx(200 / 3)  # two of the three samples of every image are wrong
    assert result.error_mean_location == 0.0
