"""Hyperparameters of the stable-baselines3 algorithms, in RL Baselines3 Zoo's YAML format.

One file per algorithm in ``agents/sb3/hyperparams/<algo>.yml`` (shipped with the package), keyed by environment id,
with a ``default`` entry for any other id, exactly as the Zoo's own ``hyperparams/ppo.yml``::

    RAM/MNIST-v0:
      policy: agents.sb3.policies.GlimpseActorCriticPolicy
      n_envs: 64
      n_timesteps: !!float 2e6
      env_kwargs: {action_form: grid}
      env_wrapper: ram_env.wrappers.GlimpseHistory
      n_steps: 24
      policy_kwargs: "dict(features_extractor_kwargs=dict(glimpse_hidden=128, glimpse_out=256))"

The same file drives both ``train_agent.py --algo NAME`` (through :func:`resolve_hyperparams`) and the Zoo
(``python -m rl_zoo3.train --algo ppo --env RAM/MNIST-v0 --gym-packages ram_env -conf <file> --env-kwargs ...``, the
``--env-kwargs`` repeating the entry's ``env_kwargs``: the Zoo builds its evaluation env from the command line's
alone, and the env's default ``dict`` action form refuses the policy's arrays). Keys the Zoo reads
itself (``n_envs``, ``n_timesteps``, ``policy``, ``env_kwargs``, ``env_wrapper``) are taken apart here as the Zoo
does; the rest go to the algorithm's constructor. ``policy_kwargs`` is a Python expression as in the Zoo (evaluated
here with only ``dict``, ``nn`` and ``th`` in scope); ``lin_<value>`` learning rates are linear schedules, as in the
Zoo. ``env_wrapper: ram_env.wrappers.GlimpseHistory`` is the single-env twin of the fast vector env's
``observation_form="history"``, which is what this project's own training uses instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from agents.config import UserError

HYPERPARAMS_DIR = Path(__file__).with_name("hyperparams")

#: Zoo keys that are not constructor arguments.
ZOO_KEYS = ("n_envs", "n_timesteps", "policy", "env_kwargs", "env_wrapper")

#: This project's ``--algo`` name -> the Zoo's ``--algo`` name (``auxppo`` is this project's own, not in the Zoo).
ZOO_ALGO_NAMES = {"recurrentppo": "ppo_lstm"}


def hyperparams_file(algo: str) -> Path:
    """The YAML file of ``algo`` (a canonical ``--algo`` name)."""
    return HYPERPARAMS_DIR / f"{algo}.yml"


def load_hyperparams(algo: str, env_id: str) -> dict[str, Any]:
    """The raw entry of ``env_id`` (else ``default``) in ``algo``'s file, as the Zoo reads it."""
    path = hyperparams_file(algo)
    if not path.is_file():
        raise UserError(f"no hyperparameter file for --algo {algo} ({path} is missing; reinstall the package)")
    table = yaml.safe_load(path.read_text(encoding="utf-8"))
    entry = table.get(env_id.removeprefix("ram_env:"), table.get("default"))
    if entry is None:
        raise UserError(f"{path} has no entry for {env_id} and no 'default' entry")
    return dict(entry)


def parse_hyperparams(text: str | None) -> dict[str, Any]:
    """``"learning_rate=1e-3,policy_kwargs=dict(net_arch=[64, 64])"`` -> a dict (values read as JSON where they
    parse, else kept as strings; commas inside brackets do not split items)."""
    items, depth, current = [], 0, ""
    for char in text or "":
        depth += char in "([{"
        depth -= char in ")]}"
        if char == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += char
    items.append(current)
    out: dict[str, Any] = {}
    for item in filter(str.strip, items):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--hyperparams item {item!r} is not key=value; write e.g. --hyperparams n_epochs=10")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value.strip()
    return out


@dataclass
class ResolvedHyperparams:
    """An entry taken apart: what the training loop needs and what the algorithm's constructor takes."""

    n_envs: int
    n_timesteps: int
    policy: Any  # a class, or an SB3 alias such as "MultiInputPolicy"
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    env_wrapper: Any = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)


def resolve_hyperparams(entry: dict[str, Any]) -> ResolvedHyperparams:
    """Take a Zoo entry apart: the Zoo's own keys, ``policy`` and ``policy_kwargs`` turned into objects, schedules."""
    entry = dict(entry)
    missing = [key for key in ("n_timesteps", "policy") if key not in entry]
    if missing:
        raise UserError(f"hyperparameters lack {', '.join(missing)}")
    kwargs = {k: v for k, v in entry.items() if k not in ZOO_KEYS}
    if isinstance(kwargs.get("policy_kwargs"), str):
        try:
            kwargs["policy_kwargs"] = eval(kwargs["policy_kwargs"], {"__builtins__": {}}, _EVAL_SCOPE)  # noqa: S307
        except Exception as err:
            raise UserError(f"cannot read policy_kwargs {kwargs['policy_kwargs']!r}: {err}") from None
    for key in ("learning_rate", "clip_range"):
        if isinstance(kwargs.get(key), str):
            kwargs[key] = _schedule(key, kwargs[key])
    if isinstance(kwargs.get("train_freq"), list):
        kwargs["train_freq"] = tuple(kwargs["train_freq"])
    return ResolvedHyperparams(
        n_envs=int(entry.get("n_envs", 1)),
        n_timesteps=int(entry["n_timesteps"]),
        policy=_policy(entry["policy"]),
        env_kwargs=dict(entry.get("env_kwargs") or {}),
        env_wrapper=entry.get("env_wrapper"),
        model_kwargs=kwargs,
    )


_EVAL_SCOPE = {"dict": dict, "list": list, "nn": nn, "th": torch}


def _policy(name: str) -> Any:
    """A dotted class path -> the class (as the Zoo's ``get_class_by_name``); an SB3 alias stays a string."""
    if "." not in name:
        return name
    import importlib

    module, _, attr = name.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise UserError(f"cannot import policy {name!r}: {err}") from None


def _schedule(key: str, value: str):
    """The Zoo's ``lin_<initial>``: linear decay from ``initial`` to 0 over training."""
    if not value.startswith("lin_"):
        raise UserError(f"{key} {value!r} is neither a number nor a lin_<value> schedule")
    initial = float(value.removeprefix("lin_"))
    return lambda progress_remaining: progress_remaining * initial
