"""The one rollout loop: a batch of glimpse episodes of the RAM agent against the vector environment.

Training, evaluation and visualisation all call :func:`rollout`. The agent sees the environment only through its
observations (glimpse, location, time step), rewards and ``info`` (the true ``label``, used by the supervised loss).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from agents.ram import RecurrentAttentionModel
from ram_env.vector import GlimpseVectorEnv

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


@dataclass
class Trajectory:
    """A batch of ``N`` finished episodes of ``T`` glimpses.

    ``logits`` (N, n_classes) after the last glimpse; ``locations`` (N, T, 2) where each glimpse was taken;
    ``means`` (N, T-1, 2) the location policy's means; ``log_pi`` (N, T-1) log-density of each chosen location;
    ``baseline`` (N, T-1) ``b_t``; ``reward`` (N,) from the environment; ``labels`` and ``index`` (N,) from ``info``.
    """

    logits: torch.Tensor
    locations: torch.Tensor
    means: torch.Tensor
    log_pi: torch.Tensor
    baseline: torch.Tensor
    reward: torch.Tensor
    labels: torch.Tensor
    index: torch.Tensor


class EpisodeRunner:
    """Holds a vector env and its pending observation between batches.

    With same-step autoreset the observation left by one batch starts the next; with autoreset off the caller
    :meth:`restart` s before each batch.
    """

    def __init__(self, env: GlimpseVectorEnv, seed: int | None = None, *, start: bool = True):
        self.env = env
        if start:
            self.restart(seed)

    def restart(self, seed: int | None = None) -> None:
        """``env.reset(seed)``: new episodes (and, for ordered splits, back to the first image)."""
        self.obs, self.info = self.env.reset(seed=seed)


def rollout(
    model: RecurrentAttentionModel,
    runner: EpisodeRunner,
    *,
    deterministic: bool = False,
    generator: torch.Generator | None = None,
) -> Trajectory:
    """Run one batch of episodes; gradients flow if grad mode is on.

    :param deterministic: take every glimpse at the policy's mean instead of a sample (no effect with
        ``location_policy="random"``: a uniform distribution has no mode, so its locations are always drawn).
    :param generator: source of the location noise, or of the uniform locations of ``location_policy="random"``
        (on the env's device), for reproducible runs.
    """
    env = runner.env
    obs, info = runner.obs, runner.info
    n, steps, device = env.num_envs, env.config.glimpses, env.device
    labels, index = info["label"], info["index"]
    std = model.config.location_std
    random_policy = model.config.location_policy == "random"
    # New episodes start from the core's zero state, given as None so that the first step skips the recurrent
    # product; with a single glimpse as explicit zeros, so that every weight still gets a gradient (DDP needs one).
    state = None if steps > 1 else model.initial_state(n, device)
    locations, means, chosen, hiddens = [], [], [], []
    no_label = torch.zeros(n, dtype=torch.long, device=device)
    logits = None
    for t in range(steps):
        h_t, state = model.step(obs["glimpse"], obs["location"], state)
        locations.append(obs["location"])
        if t < steps - 1:
            mu, l_next = model.next_location(h_t, deterministic=deterministic, generator=generator)  # (N, 2) each
            means.append(mu)
            chosen.append(l_next)
            hiddens.append(h_t)
            action = {"location": l_next.clamp(-1.0, 1.0), "label": no_label}
        else:
            logits = model.classify(h_t)
            action = {"location": torch.zeros(n, 2, device=device), "label": logits.detach().argmax(dim=1)}
        obs, reward, _terminated, _truncated, info = env.step(action)
    runner.obs, runner.info = obs, info
    assert logits is not None, "the last step classifies"
    if steps > 1:
        mu = torch.stack(means, dim=1)  # (N, T-1, 2)
        l_chosen = torch.stack(chosen, dim=1)  # (N, T-1, 2)
        log_pi = (-((l_chosen - mu) ** 2) / (2 * std**2) - math.log(std) - _LOG_SQRT_2PI).sum(-1)  # (N, T-1)
        if random_policy:
            log_pi = torch.zeros_like(log_pi)  # nothing to reinforce: the REINFORCE term is zero
        baseline = model.baseline(torch.stack(hiddens, dim=1))  # (N, T-1)
    else:
        mu = torch.zeros(n, 0, 2, device=device)
        log_pi = baseline = torch.zeros(n, 0, device=device)
    return Trajectory(
        logits=logits,
        locations=torch.stack(locations, dim=1),
        means=mu,
        log_pi=log_pi,
        baseline=baseline,
        reward=reward,
        labels=labels,
        index=index,
    )


class Rollout(nn.Module):
    """:func:`rollout` as a module's forward pass, so that wrappers such as ``DistributedDataParallel`` see the
    whole batch of episodes as one forward call of the model (whose parameters it shares)."""

    def __init__(self, model: RecurrentAttentionModel):
        super().__init__()
        self.model = model

    def forward(
        self, runner: EpisodeRunner, *, deterministic: bool = False, generator: torch.Generator | None = None
    ) -> Trajectory:
        return rollout(self.model, runner, deterministic=deterministic, generator=generator)


def hybrid_loss(traj: Trajectory) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The paper's hybrid loss: cross-entropy + REINFORCE with a learned baseline + the baseline's squared error.

    ``-sum_t log pi(l_t | h_t) (R - b_t)`` (``b_t`` detached) trains the location network; cross-entropy on the true
    label trains the classifier, core and glimpse networks; ``(b_t - R)^2`` trains the baseline.
    """
    ce = F.cross_entropy(traj.logits, traj.labels)
    reward = traj.reward[:, None]  # (N, 1)
    advantage = (reward - traj.baseline).detach()  # (N, T-1)
    reinforce = -(traj.log_pi * advantage).sum(dim=1).mean()
    baseline_mse = ((traj.baseline - reward) ** 2).mean() if traj.baseline.numel() else ce.new_zeros(())
    loss = ce + reinforce + baseline_mse
    stats = {
        "losses/cross_entropy": ce.detach(),
        "losses/reinforce": reinforce.detach(),
        "losses/baseline_mse": baseline_mse.detach(),
        "losses/total": loss.detach(),
        "charts/reward": traj.reward.mean(),
        "charts/baseline": traj.baseline.detach().mean() if traj.baseline.numel() else ce.new_zeros(()),
        "charts/accuracy": (traj.logits.detach().argmax(1) == traj.labels).float().mean(),
    }
    return loss, stats
