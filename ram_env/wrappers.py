"""Gymnasium wrappers for the single glimpse environment."""

from __future__ import annotations

from typing import Any, cast

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class GlimpseHistory(gym.ObservationWrapper):
    """Replace each observation by every glimpse of the episode so far (a Markov observation for feed-forward agents).

    The observation is a ``Dict`` with ``glimpses`` ``(T, k, C, g, g)`` and ``locations`` ``(T, 2)`` (slot ``j`` holds
    glimpse ``j`` and its location; slots of glimpses not taken yet are zero) and ``t`` (Discrete(T), the current
    glimpse). It is the layout of :class:`ram_env.sb3.SB3VecEnvAdapter` with ``observation_form="history"``::

        env = GlimpseHistory(gym.make("ram_env:RAM/MNIST-v0", action_form="grid"))
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        from ram_env.sb3 import history_observation_space

        space = history_observation_space(cast(spaces.Dict, env.observation_space))
        self.observation_space = space
        steps = int(cast(spaces.Discrete, space["t"]).n)
        self._glimpses = np.zeros(cast(spaces.Box, space["glimpses"]).shape, dtype=np.float32)  # (T, k, C, g, g)
        self._locations = np.zeros((steps, 2), dtype=np.float32)  # (T, 2)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict[str, Any]]:
        self._glimpses[:] = 0.0
        self._locations[:] = 0.0
        return super().reset(seed=seed, options=options)

    def observation(self, observation: dict[str, Any]) -> dict[str, Any]:
        t = int(observation["t"])
        self._glimpses[t] = observation["glimpse"]
        self._locations[t] = observation["location"]
        return {"glimpses": self._glimpses.copy(), "locations": self._locations.copy(), "t": observation["t"]}
