"""The algorithms ``--algo`` names: how each is built (class, action and observation forms, policy, constructor
arguments), and SB3 models stored inside this project's checkpoints."""

from __future__ import annotations

import importlib
import io
from dataclasses import dataclass
from typing import Any

import torch

from agents.config import TrainConfig, UserError
from agents.sb3.features import GlimpseFeaturesExtractor
from ram_env.sb3 import SB3VecEnvAdapter
from ram_env.vector import GlimpseVectorEnv


@dataclass(frozen=True)
class AlgorithmSpec:
    """How ``--algo NAME`` is built: the class, its kind, the action and observation forms and the policy."""

    module: str
    class_name: str
    kind: str  # "on-policy", "off-policy" or "recurrent"
    action_form: str
    observation_form: str
    policy: str

    def load_class(self):
        return getattr(importlib.import_module(self.module), self.class_name)


_ON = ("on-policy", "grid", "history", "MultiInputPolicy")
_OFF = ("off-policy", "box", "history", "MultiInputPolicy")
_REC = ("recurrent", "grid", "glimpse", "MultiInputLstmPolicy")

ALGORITHMS: dict[str, AlgorithmSpec] = {
    "ppo": AlgorithmSpec("stable_baselines3", "PPO", *_ON),
    "a2c": AlgorithmSpec("stable_baselines3", "A2C", *_ON),
    "trpo": AlgorithmSpec("sb3_contrib", "TRPO", *_ON),
    "sac": AlgorithmSpec("stable_baselines3", "SAC", *_OFF),
    "td3": AlgorithmSpec("stable_baselines3", "TD3", *_OFF),
    "ddpg": AlgorithmSpec("stable_baselines3", "DDPG", *_OFF),
    "tqc": AlgorithmSpec("sb3_contrib", "TQC", *_OFF),
    "recurrentppo": AlgorithmSpec("sb3_contrib", "RecurrentPPO", *_REC),
    "auxppo": AlgorithmSpec("agents.sb3.auxppo", "AuxiliaryRecurrentPPO", *_REC),
}


def algorithm_spec(name: str) -> tuple[str, AlgorithmSpec]:
    """The canonical name and spec of ``name`` (case-insensitive; ``-`` and ``_`` ignored)."""
    key = name.lower().replace("-", "").replace("_", "")
    if key not in ALGORITHMS:
        raise UserError(f"unknown algorithm {name!r}; choose ram or one of: {', '.join(ALGORITHMS)}")
    return key, ALGORITHMS[key]


def algorithm_kwargs(spec: AlgorithmSpec, config: TrainConfig, glimpses: int) -> dict[str, Any]:
    """Constructor arguments: SB3's defaults, adapted to short fixed-length episodes and many parallel envs.

    * on-policy and recurrent: rollouts of ``4 T`` steps per env (whole episodes; A2C: ``T``), 4 minibatches, 4
      epochs (PPO family);
    * off-policy: replay buffer ``min(total_timesteps, 100k)`` (history observations are large), one gradient step
      per 8 transitions (``gradient_steps = n_envs / 8`` per vector step), 1000 random warm-up steps.
    """
    n_envs = config.n_envs
    feature_kwargs = {"glimpse_hidden": config.glimpse_hidden, "glimpse_out": config.glimpse_out}
    policy_kwargs: dict[str, Any] = {
        "features_extractor_class": GlimpseFeaturesExtractor,
        "features_extractor_kwargs": feature_kwargs,
    }
    kwargs: dict[str, Any] = {}
    if spec.kind == "off-policy":
        kwargs.update(
            buffer_size=min(config.total_timesteps, 100_000),
            learning_starts=min(1000, config.total_timesteps // 2),
            gradient_steps=max(1, n_envs // 8),
        )
    elif spec.class_name == "A2C":
        kwargs.update(n_steps=glimpses)
    else:
        n_steps = 4 * glimpses
        kwargs.update(n_steps=n_steps, batch_size=max(n_steps * n_envs // 4, 2))
        if spec.class_name != "TRPO":
            kwargs.update(n_epochs=4)
    if spec.kind == "recurrent":
        policy_kwargs["lstm_hidden_size"] = config.hidden_size
    if config.learning_rate != TrainConfig.learning_rate:
        kwargs["learning_rate"] = config.learning_rate
    kwargs["policy_kwargs"] = policy_kwargs
    return kwargs


def make_adapter(
    env_kwargs: dict[str, Any], n_envs: int, observation_form: str, *, device, mc_samples: int = 1
) -> SB3VecEnvAdapter:
    env = GlimpseVectorEnv(n_envs, device=device, mc_samples=mc_samples, **env_kwargs)
    return SB3VecEnvAdapter(env, observation_form=observation_form)


def model_to_tensor(model) -> torch.Tensor:
    """The SB3 model's ``.zip`` bytes as a uint8 tensor (loadable with ``torch.load(weights_only=True)``)."""
    buffer = io.BytesIO()
    model.save(buffer)
    return torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8).clone()


def load_sb3_model(payload: dict[str, Any], *, env=None, device: str | torch.device = "cpu", **kwargs: Any):
    """Rebuild the SB3 model stored in a checkpoint payload."""
    _, spec = algorithm_spec(payload["algo"])
    data = payload["sb3_model"].cpu().numpy().tobytes()
    return spec.load_class().load(io.BytesIO(data), env=env, device=device, **kwargs)
