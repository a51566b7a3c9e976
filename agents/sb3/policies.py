"""SB3 policies whose features extractor is the paper's glimpse network by default.

A hyperparameter file names them by their dotted path (``policy: agents.sb3.policies.GlimpseActorCriticPolicy``), which
RL Baselines3 Zoo and :mod:`agents.sb3.hyperparams` both resolve to the class; the file then needs no Python object
in ``policy_kwargs`` (the Zoo evaluates that string in its own module, where this package's names are unknown).
Each class is SB3's multi-input policy of its algorithm with ``features_extractor_class`` defaulting to
:class:`~agents.sb3.features.GlimpseFeaturesExtractor`; every other argument is passed through unchanged.

The actor-critic policies (PPO, A2C, TRPO, RecurrentPPO, auxppo) also leave out of the policy gradient the parts of
an action the environment ignores (``mask_unused_actions``, on by default): the class at every step but the last,
the location at the last. Each step's action carries both parts (one action space for the whole episode), but only
one of them reaches the environment; the other is a draw whose log-probability is pure noise in the gradient
(its mean is zero: the reward does not depend on it) and whose entropy the entropy bonus would reward for nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import torch
from gymnasium import spaces
from sb3_contrib.common.recurrent.policies import RecurrentMultiInputActorCriticPolicy
from sb3_contrib.tqc.policies import MultiInputPolicy as TQCMultiInputPolicy
from stable_baselines3.common.distributions import (
    DiagGaussianDistribution,
    Distribution,
    MultiCategoricalDistribution,
)
from stable_baselines3.common.policies import MultiInputActorCriticPolicy
from stable_baselines3.sac.policies import MultiInputPolicy as SACMultiInputPolicy
from stable_baselines3.td3.policies import MultiInputPolicy as TD3MultiInputPolicy

from agents.sb3.features import GlimpseFeaturesExtractor


class _GlimpseFeaturesByDefault:
    """Mixin: the policy's features extractor is the glimpse network unless ``features_extractor_class`` is given."""

    def __init__(self, observation_space: Any, action_space: Any, lr_schedule: Any, **kwargs: Any):
        kwargs.setdefault("features_extractor_class", GlimpseFeaturesExtractor)
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)  # type: ignore[call-arg]


class _MaskedParts:
    """Mixin for an SB3 distribution: ``log_prob`` and ``entropy`` sum only the action parts not marked ``unused``.

    ``unused`` is ``(B, D)`` bool over the ``D`` parts of a batch of ``B`` actions (the sub-actions of a
    ``MultiDiscrete``, the dimensions of a ``Box``), or ``None``: SB3's sums over every part.
    """

    unused: torch.Tensor | None = None

    def _part_log_probs(self, actions: torch.Tensor) -> torch.Tensor:  # (B, D)
        raise NotImplementedError

    def _part_entropies(self) -> torch.Tensor:  # (B, D)
        raise NotImplementedError

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        if self.unused is None:
            return super().log_prob(actions)  # type: ignore[misc]
        return self._part_log_probs(actions).masked_fill(self.unused, 0.0).sum(dim=1)

    def entropy(self) -> torch.Tensor:
        if self.unused is None:
            return super().entropy()  # type: ignore[misc]
        return self._part_entropies().masked_fill(self.unused, 0.0).sum(dim=1)


class MaskedMultiCategoricalDistribution(_MaskedParts, MultiCategoricalDistribution):
    """SB3's ``MultiCategoricalDistribution`` (the ``grid`` action form) with :class:`_MaskedParts`."""

    def _part_log_probs(self, actions: torch.Tensor) -> torch.Tensor:
        heads = cast(list[torch.distributions.Categorical], self.distribution)
        return torch.stack([head.log_prob(a) for head, a in zip(heads, torch.unbind(actions, dim=1), strict=True)], 1)

    def _part_entropies(self) -> torch.Tensor:
        heads = cast(list[torch.distributions.Categorical], self.distribution)
        return torch.stack([head.entropy() for head in heads], 1)


class MaskedDiagGaussianDistribution(_MaskedParts, DiagGaussianDistribution):
    """SB3's ``DiagGaussianDistribution`` (the ``box`` action form) with :class:`_MaskedParts`."""

    def _part_log_probs(self, actions: torch.Tensor) -> torch.Tensor:
        return self.distribution.log_prob(actions)

    def _part_entropies(self) -> torch.Tensor:
        return self.distribution.entropy()


class _UnusedActionPartsMasked:
    """Mixin for SB3 actor-critic policies: the action parts the environment ignores at a step are left out of the
    log-probability and the entropy that ``forward``, ``evaluate_actions`` and ``get_distribution`` give.

    The step comes from the observation's ``t`` (``Discrete(T)``: the glimpse just taken); at ``t < T - 1`` the
    action's location is used and its class ignored, at ``t = T - 1`` the reverse. The first two parts of a ``grid``
    (``MultiDiscrete([G, G, n])``) or ``box`` (``Box((2 + n,))``) action are the location, the rest the class.
    Sampling is unchanged: the ignored part is still drawn, only its log-probability is not credited.

    :param mask_unused_actions: ``False`` restores SB3's sum over every part.
    """

    action_dist: Distribution

    def __init__(self, *args: Any, mask_unused_actions: bool = True, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.mask_unused_actions = mask_unused_actions
        self._unused: torch.Tensor | None = None
        if not mask_unused_actions:
            return
        observation_space = self.observation_space  # type: ignore[attr-defined]
        if not isinstance(observation_space, spaces.Dict) or "t" not in observation_space.spaces:
            raise ValueError(
                "mask_unused_actions needs the observation's 't' (the glimpse tasks' Dict observation); "
                "for another observation pass mask_unused_actions=False in policy_kwargs"
            )
        self._steps = int(cast(spaces.Discrete, observation_space["t"]).n)
        if type(self.action_dist) is MultiCategoricalDistribution:
            self.action_dist = MaskedMultiCategoricalDistribution(self.action_dist.action_dims)
            self._parts = len(self.action_dist.action_dims)
        elif type(self.action_dist) is DiagGaussianDistribution:
            self.action_dist = MaskedDiagGaussianDistribution(self.action_dist.action_dim)
            self._parts = self.action_dist.action_dim
        else:
            raise ValueError(
                "mask_unused_actions needs the 'grid' or 'box' action form (a MultiDiscrete or Box action space); "
                f"got {type(self.action_dist).__name__}. Pass mask_unused_actions=False in policy_kwargs."
            )

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {**super()._get_constructor_parameters(), "mask_unused_actions": self.mask_unused_actions}  # type: ignore[misc]

    def unused_parts(self, t: torch.Tensor) -> torch.Tensor:
        """``(B, D)`` bool: which parts of the actions taken at steps ``t`` (``(B,)`` or ``(B, 1)``) are ignored."""
        last = (t.reshape(-1).long() == self._steps - 1).unsqueeze(1)  # (B, 1)
        is_location = torch.arange(self._parts, device=t.device) < 2  # (D,)
        return torch.where(last, is_location, ~is_location)  # (B, D)

    @contextmanager
    def _masking(self, obs: Any) -> Iterator[None]:
        """Within the block, distributions built from the policy's latent carry the mask of ``obs``'s steps."""
        self._unused = self.unused_parts(obs["t"]) if self.mask_unused_actions else None
        try:
            yield
        finally:
            self._unused = None

    def _get_action_dist_from_latent(self, latent_pi: torch.Tensor, *args: Any) -> Distribution:
        distribution = super()._get_action_dist_from_latent(latent_pi, *args)  # type: ignore[misc]
        if isinstance(distribution, _MaskedParts):
            distribution.unused = self._unused
        return distribution

    def forward(self, obs: Any, *args: Any, **kwargs: Any) -> Any:
        with self._masking(obs):
            return super().forward(obs, *args, **kwargs)  # type: ignore[misc]

    def evaluate_actions(self, obs: Any, *args: Any, **kwargs: Any) -> Any:
        with self._masking(obs):
            return super().evaluate_actions(obs, *args, **kwargs)  # type: ignore[misc]

    def get_distribution(self, obs: Any, *args: Any, **kwargs: Any) -> Any:
        with self._masking(obs):
            return super().get_distribution(obs, *args, **kwargs)  # type: ignore[misc]


class GlimpseActorCriticPolicy(_UnusedActionPartsMasked, _GlimpseFeaturesByDefault, MultiInputActorCriticPolicy):
    """PPO, A2C and TRPO: SB3's ``MultiInputPolicy`` over the glimpse network, unused action parts masked."""


class GlimpseLstmPolicy(_UnusedActionPartsMasked, _GlimpseFeaturesByDefault, RecurrentMultiInputActorCriticPolicy):
    """RecurrentPPO and ``auxppo``: sb3-contrib's ``MultiInputLstmPolicy`` over the glimpse network, unused action
    parts masked."""


class GlimpseSACPolicy(_GlimpseFeaturesByDefault, SACMultiInputPolicy):
    """SAC: SB3's ``MultiInputPolicy`` over the glimpse network."""


class GlimpseTD3Policy(_GlimpseFeaturesByDefault, TD3MultiInputPolicy):
    """TD3 and DDPG: SB3's ``MultiInputPolicy`` over the glimpse network."""


class GlimpseTQCPolicy(_GlimpseFeaturesByDefault, TQCMultiInputPolicy):
    """TQC: sb3-contrib's ``MultiInputPolicy`` over the glimpse network."""
