"""Scoring stable-baselines3 models with the project's one evaluation loop (:func:`agents.evaluation.evaluate_policy`).

:class:`SB3Policy` presents an SB3 model as a :class:`~agents.evaluation.GlimpsePolicy`: it builds the observation
form the model was trained on (one glimpse, or the history of all glimpses so far) from the vector env's observation,
asks ``model.predict``, and decodes the ``box`` / ``grid`` action into a location and a class with the task's own
action decoder (what the environment would do with that action).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from agents.evaluation import Decision, EvaluationResult, evaluate_policy, make_report
from agents.sb3.algorithms import algorithm_spec, load_sb3_model
from ram_env.actions import ActionForm
from ram_env.seeding import stream_seed
from ram_env.task import Task, TaskConfig


@dataclass
class _SB3State:
    """The memory of a batch of episodes: the LSTM state (recurrent policies) and the glimpse history."""

    starts: np.ndarray  # (N,) True until the first step
    glimpses: np.ndarray | None = None  # (N, T, k, C, g, g) history form only
    locations: np.ndarray | None = None  # (N, T, 2)
    lstm: Any = field(default=None)


class SB3Policy:
    """A stable-baselines3 model as a :class:`~agents.evaluation.GlimpsePolicy`.

    SB3 policies expose no class distribution common to every action form, so the last decision names a class
    (``class_distribution = False``: Monte Carlo is a majority vote). Sampling (``deterministic=False``) draws from
    torch's global generator, as ``model.predict`` does; :func:`evaluate_sb3_checkpoint` seeds it.

    :param model: a loaded SB3 model.
    :param action_form: the task's decoder of the model's actions (``box`` or ``grid``).
    :param observation_form: ``"glimpse"`` or ``"history"`` (:mod:`ram_env.sb3`), as in training.
    """

    class_distribution = False

    def __init__(self, model: Any, *, action_form: ActionForm, observation_form: str):
        self.model = model
        self.action_form = action_form
        self.history = observation_form == "history"

    def initial_state(self, n: int, device: torch.device) -> _SB3State:
        return _SB3State(starts=np.ones(n, dtype=bool))

    def act(self, obs, state, *, last, deterministic, generator):
        n = obs["location"].shape[0]
        glimpse, location, t = (obs[k].cpu().numpy() for k in ("glimpse", "location", "t"))
        if self.history:
            if state.glimpses is None:
                steps = self.model.observation_space["t"].n
                state.glimpses = np.zeros((n, steps, *glimpse.shape[1:]), dtype=np.float32)
                state.locations = np.zeros((n, steps, 2), dtype=np.float32)
            step = int(t[0])  # every episode is at the same step
            state.glimpses[:, step], state.locations[:, step] = glimpse, location
            sb3_obs = {"glimpses": state.glimpses.copy(), "locations": state.locations.copy(), "t": t}
        else:
            sb3_obs = {"glimpse": glimpse, "location": location, "t": t}
        actions, state.lstm = self.model.predict(
            sb3_obs, state=state.lstm, episode_start=state.starts, deterministic=deterministic
        )
        state.starts[:] = False
        l_next, label = self.action_form.decode(actions, batch=n, device=obs["location"].device)
        return Decision(location=l_next, label=label), state


def evaluate_sb3_checkpoint(
    payload: dict[str, Any],
    *,
    split: str = "test",
    mc_samples: int = 10,
    device: str | torch.device = "cpu",
    seed: int = 0,
    max_images: int | None = None,
    batch_images: int | None = None,
) -> tuple[EvaluationResult, dict]:
    """Score the SB3 model of a checkpoint on ``split`` with the same loop and figures as the RAM agent.

    * **sampled**: ``deterministic=False`` (locations and class sampled from the policy);
    * **mean location**: ``deterministic=True`` (the policy's mode: mean location for ``box``, most likely cell for
      ``grid``; most likely class);
    * **Monte Carlo**: the majority vote of the ``M`` sampled classes (ties go to the lowest class index).

    :param max_images: score only the first ``max_images`` images of the split (quick checks).
    :param batch_images: distinct images per batch (default: ``agents.evaluation.default_batch_images``).
    :return: the result and ``evaluate.py``'s report.
    """
    device = torch.device(device)
    _, spec = algorithm_spec(payload["algo"])
    env_kwargs = {**payload["env_kwargs"], "split": split}
    task = Task(TaskConfig.from_kwargs(**env_kwargs))
    model = load_sb3_model(payload, device=device)
    model.policy.set_training_mode(False)
    policy = SB3Policy(
        model,
        action_form=task.action_form,
        observation_form=payload.get("observation_form", spec.observation_form),
    )
    # SB3 samples actions from torch's global generator: seed it (in a fork, leaving the caller's state alone).
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(stream_seed(seed, "eval/policy"))
        result = evaluate_policy(
            policy,
            env_kwargs,
            device=device,
            mc_samples=mc_samples,
            batch_images=batch_images,
            seed=seed,
            max_images=max_images,
        )
    return result, make_report(payload, result, split, task.n_classes)
