"""The algorithms ``--algo`` names: how each is built (class, action and observation forms, policy, constructor
arguments), and SB3 models stored inside this project's checkpoints."""

from __future__ import annotations

import importlib
import io
from dataclasses import dataclass
from typing import Any

import torch

from agents.config import TrainConfig, UserError, canonical_algo
from agents.sb3.hyperparams import load_hyperparams, parse_hyperparams, resolve_hyperparams
from ram_env.sb3 import SB3VecEnvAdapter
from ram_env.vector import GlimpseVectorEnv


@dataclass(frozen=True)
class AlgorithmSpec:
    """How ``--algo NAME`` is built: the class, its kind, the action and observation forms (the policy and every
    hyperparameter come from its file in ``agents/sb3/hyperparams/``, :func:`algorithm_setup`)."""

    module: str
    class_name: str
    kind: str  # "on-policy", "off-policy" or "recurrent"
    action_form: str
    observation_form: str

    def load_class(self):
        return getattr(importlib.import_module(self.module), self.class_name)


_ON = ("on-policy", "grid", "history")
_OFF = ("off-policy", "box", "history")
_REC = ("recurrent", "grid", "glimpse")

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
    key = canonical_algo(name)
    if key not in ALGORITHMS:
        raise UserError(f"unknown algorithm {name!r}; choose ram or one of: {', '.join(ALGORITHMS)}")
    return key, ALGORITHMS[key]


@dataclass
class AlgorithmSetup:
    """What ``train_sb3`` builds for one run, from the algorithm's hyperparameter file and the run's flags."""

    n_envs: int
    total_timesteps: int
    policy: Any
    env_kwargs: dict[str, Any]
    model_kwargs: dict[str, Any]


def algorithm_setup(name: str, spec: AlgorithmSpec, config: TrainConfig) -> AlgorithmSetup:
    """The run's hyperparameters: the entry of ``config.env`` in ``agents/sb3/hyperparams/<name>.yml`` (the one source
    of the defaults, which RL Baselines3 Zoo reads too), then ``--hyperparams``, then explicit flags.

    Flags: ``--total-timesteps`` and ``--n-envs`` when given; ``--learning-rate``, ``--glimpse-hidden``,
    ``--glimpse-out`` and ``--hidden-size`` (the LSTM of recurrent policies) when they differ from their defaults,
    which are the RAM agent's (write ``--hyperparams learning_rate=0.001`` to force a RAM default value). Two sizes
    follow the budget: ``buffer_size`` at most ``total_timesteps``, ``learning_starts`` at most half of it.
    """
    entry = load_hyperparams(name, config.env)
    entry.update(parse_hyperparams(config.hyperparams))
    hp = resolve_hyperparams(entry)
    env_kwargs = dict(hp.env_kwargs)
    if env_kwargs.setdefault("action_form", spec.action_form) != spec.action_form:
        raise UserError(f"--algo {name} needs action_form {spec.action_form!r}, its hyperparameters give {env_kwargs}")
    n_envs = config.n_envs if config.n_envs is not None else hp.n_envs
    total = config.total_timesteps if config.total_timesteps is not None else hp.n_timesteps
    kwargs = dict(hp.model_kwargs)
    policy_kwargs = dict(kwargs.get("policy_kwargs") or {})
    features = dict(policy_kwargs.get("features_extractor_kwargs") or {})
    defaults = TrainConfig()
    for field_name in ("glimpse_hidden", "glimpse_out"):
        if getattr(config, field_name) != getattr(defaults, field_name) or field_name not in features:
            features[field_name] = getattr(config, field_name)
    policy_kwargs["features_extractor_kwargs"] = features
    if spec.kind == "recurrent" and (
        config.hidden_size != defaults.hidden_size or "lstm_hidden_size" not in policy_kwargs
    ):
        policy_kwargs["lstm_hidden_size"] = config.hidden_size
    kwargs["policy_kwargs"] = policy_kwargs
    if config.learning_rate != defaults.learning_rate:
        kwargs["learning_rate"] = config.learning_rate
    if "buffer_size" in kwargs:
        kwargs["buffer_size"] = min(int(kwargs["buffer_size"]), total)
    if "learning_starts" in kwargs:
        kwargs["learning_starts"] = min(int(kwargs["learning_starts"]), total // 2)
    return AlgorithmSetup(
        n_envs=n_envs, total_timesteps=total, policy=hp.policy, env_kwargs=env_kwargs, model_kwargs=kwargs
    )


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
