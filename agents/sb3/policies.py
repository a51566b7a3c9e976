"""SB3 policies whose features extractor is the paper's glimpse network by default.

A hyperparameter file names them by their dotted path (``policy: agents.sb3.policies.GlimpseActorCriticPolicy``), which
RL Baselines3 Zoo and :mod:`agents.sb3.hyperparams` both resolve to the class; the file then needs no Python object
in ``policy_kwargs`` (the Zoo evaluates that string in its own module, where this package's names are unknown).
Each class is SB3's multi-input policy of its algorithm with ``features_extractor_class`` defaulting to
:class:`~agents.sb3.features.GlimpseFeaturesExtractor`; every other argument is passed through unchanged.
"""

from __future__ import annotations

from typing import Any

from sb3_contrib.common.recurrent.policies import RecurrentMultiInputActorCriticPolicy
from sb3_contrib.tqc.policies import MultiInputPolicy as TQCMultiInputPolicy
from stable_baselines3.common.policies import MultiInputActorCriticPolicy
from stable_baselines3.sac.policies import MultiInputPolicy as SACMultiInputPolicy
from stable_baselines3.td3.policies import MultiInputPolicy as TD3MultiInputPolicy

from agents.sb3.features import GlimpseFeaturesExtractor


class _GlimpseFeaturesByDefault:
    """Mixin: the policy's features extractor is the glimpse network unless ``features_extractor_class`` is given."""

    def __init__(self, observation_space: Any, action_space: Any, lr_schedule: Any, **kwargs: Any):
        kwargs.setdefault("features_extractor_class", GlimpseFeaturesExtractor)
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)  # type: ignore[call-arg]


class GlimpseActorCriticPolicy(_GlimpseFeaturesByDefault, MultiInputActorCriticPolicy):
    """PPO, A2C and TRPO: SB3's ``MultiInputPolicy`` over the glimpse network."""


class GlimpseLstmPolicy(_GlimpseFeaturesByDefault, RecurrentMultiInputActorCriticPolicy):
    """RecurrentPPO and ``auxppo``: sb3-contrib's ``MultiInputLstmPolicy`` over the glimpse network."""


class GlimpseSACPolicy(_GlimpseFeaturesByDefault, SACMultiInputPolicy):
    """SAC: SB3's ``MultiInputPolicy`` over the glimpse network."""


class GlimpseTD3Policy(_GlimpseFeaturesByDefault, TD3MultiInputPolicy):
    """TD3 and DDPG: SB3's ``MultiInputPolicy`` over the glimpse network."""


class GlimpseTQCPolicy(_GlimpseFeaturesByDefault, TQCMultiInputPolicy):
    """TQC: sb3-contrib's ``MultiInputPolicy`` over the glimpse network."""
