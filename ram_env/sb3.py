"""stable-baselines3 adapter: the batched torch :class:`~ram_env.vector.GlimpseVectorEnv` as an SB3 ``VecEnv``.

SB3 does not accept gymnasium vector envs, and its algorithms want numpy in and out. :class:`SB3VecEnvAdapter` runs
the fast torch env underneath (all episodes in one set of tensor ops) and speaks SB3's protocol on top::

    from stable_baselines3 import PPO
    from ram_env.sb3 import make_sb3_vec_env

    venv = make_sb3_vec_env("RAM/MNIST-v0", n_envs=64, action_form="grid", observation_form="history")
    PPO("MultiInputPolicy", venv).learn(10_000)

**Actions** are numpy batches in the env's ``"box"`` or ``"grid"`` form (the ``"dict"`` form is not an SB3 space).
**Observations** are numpy dicts in one of two forms:

==============  ==================================================================================================
form            keys (per environment)
==============  ==================================================================================================
``"glimpse"``   the env's own: ``glimpse (k, C, g, g)``, ``location (2,)``, ``t`` (Discrete(T)). For recurrent
                policies (RecurrentPPO), whose LSTM carries the memory, as the RAM core does.
``"history"``   every glimpse so far: ``glimpses (T, k, C, g, g)`` and ``locations (T, 2)`` with slot ``j`` holding
                glimpse ``j`` and zeros for glimpses not taken yet, and ``t`` (Discrete(T)) the current glimpse. For
                feed-forward policies (PPO, A2C, SAC, TD3, ...): the observation is then Markov.
==============  ==================================================================================================

The single-env twin of the history form is :class:`ram_env.wrappers.GlimpseHistory` (same keys and layout).

**Step results** follow SB3: ``rewards`` float32 ``(N,)``, ``dones`` bool ``(N,)``, and ``infos`` a list of ``N``
dicts. Every info holds ``label`` (the true class of the episode the action was taken in) and ``index``; at the end
of an episode it adds ``is_success``, ``TimeLimit.truncated`` (always False) and ``terminal_observation`` (that
environment's last observation, a numpy dict); the returned observation is then already the next episode's first
(SB3's autoreset). All environments end on the same step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnv

from ram_env.vector import GlimpseVectorEnv

OBSERVATION_FORMS = ("glimpse", "history")
SB3_ACTION_FORMS = ("box", "grid")


def history_observation_space(single: spaces.Dict) -> spaces.Dict:
    """The ``"history"`` form of a glimpse observation space (``glimpses``, ``locations``, ``t``)."""
    steps = int(cast(spaces.Discrete, single["t"]).n)
    glimpse = cast(spaces.Box, single["glimpse"])
    return spaces.Dict(
        {
            "glimpses": spaces.Box(0.0, 1.0, shape=(steps, *glimpse.shape), dtype=np.float32),
            "locations": spaces.Box(-1.0, 1.0, shape=(steps, 2), dtype=np.float32),
            "t": spaces.Discrete(steps),
        }
    )


class SB3VecEnvAdapter(VecEnv):
    """A :class:`~ram_env.vector.GlimpseVectorEnv` seen as a stable-baselines3 ``VecEnv``.

    :param env: the torch vector env; its ``action_form`` must be ``"box"`` or ``"grid"``.
    :param observation_form: ``"glimpse"`` (the env's observation) or ``"history"`` (all glimpses so far).
    """

    def __init__(self, env: GlimpseVectorEnv, *, observation_form: str = "glimpse"):
        if env.config.action_form not in SB3_ACTION_FORMS:
            raise ValueError(
                f"stable-baselines3 needs action_form 'box' or 'grid', got {env.config.action_form!r}; "
                "build the vector env with action_form='box' (SAC, TD3) or 'grid' (PPO, A2C, RecurrentPPO)"
            )
        if not getattr(env, "autoreset", True):
            raise ValueError("the adapter needs the vector env's same-step autoreset; build it with autoreset=True")
        if observation_form not in OBSERVATION_FORMS:
            raise ValueError(
                f"unknown observation_form {observation_form!r}; choose one of {', '.join(OBSERVATION_FORMS)}"
            )
        self.env = env
        self.observation_form = observation_form
        self.render_mode = None
        single = env.single_observation_space
        obs_space = history_observation_space(single) if observation_form == "history" else single
        steps, n = env.config.glimpses, env.num_envs
        glimpse_shape = cast(spaces.Box, single["glimpse"]).shape
        self._history_glimpses = torch.zeros(n, steps, *glimpse_shape, device=env.device)  # (N,T,k,C,g,g)
        self._history_locations = torch.zeros(n, steps, 2, device=env.device)  # (N, T, 2)
        self._actions: np.ndarray | None = None
        super().__init__(env.num_envs, obs_space, env.single_action_space)

    # --- the VecEnv protocol ---------------------------------------------------------------------------------

    def reset(self) -> dict[str, np.ndarray]:
        seed = self._seeds[0]
        obs, info = self.env.reset(seed=seed)
        self._reset_seeds()
        self._reset_options()
        obs = self._observe(obs, new_episode=True)
        self.reset_infos = [
            {"label": int(a), "index": int(b)} for a, b in zip(_np(info["label"]), _np(info["index"]), strict=True)
        ]
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self):
        if self._actions is None:
            raise RuntimeError("call step_async() before step_wait()")
        actions, self._actions = self._actions, None
        obs, reward, terminated, truncated, info = self.env.step(actions)
        dones = _np(terminated | truncated).astype(bool)
        if "final_obs" in info:  # all environments ended together (the env's same-step autoreset)
            final_info = info["final_info"]
            terminal = self._observe(info["final_obs"], new_episode=False)
            obs = self._observe(obs, new_episode=True)
            labels, index, success = (_np(final_info[k]) for k in ("label", "index", "is_success"))
            infos = [
                {
                    "label": int(labels[i]),
                    "index": int(index[i]),
                    "is_success": bool(success[i]),
                    "TimeLimit.truncated": False,
                    "terminal_observation": {key: value[i] for key, value in terminal.items()},
                }
                for i in range(self.num_envs)
            ]
        else:
            obs = self._observe(obs, new_episode=False)
            infos = [
                {"label": int(a), "index": int(b)} for a, b in zip(_np(info["label"]), _np(info["index"]), strict=True)
            ]
        return obs, _np(reward).astype(np.float32), dones, infos

    def close(self) -> None:
        self.env.close()

    def seed(self, seed: int | None = None) -> Sequence[int | None]:
        """Seed the next :meth:`reset` (the torch env has one generator for all environments: ``seed`` is used)."""
        return super().seed(seed)

    def get_attr(self, attr_name: str, indices=None) -> list[Any]:
        """The attribute of the (one, shared) underlying env, repeated for each index."""
        value = getattr(self, attr_name) if attr_name == "render_mode" else getattr(self.env, attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
        """Set an attribute of the underlying env (shared by every environment, so ``indices`` must be all)."""
        setattr(self.env, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices=None, **method_kwargs) -> list[Any]:
        """Call a method of the underlying env once; its result is repeated for each index."""
        result = getattr(self.env, method_name)(*method_args, **method_kwargs)
        return [result for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices=None) -> list[bool]:
        """Always False: the environments are batched tensors, not wrapped gymnasium envs."""
        return [False for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [None for _ in range(self.num_envs)]

    # --- observations ----------------------------------------------------------------------------------------

    def _observe(self, obs: dict[str, torch.Tensor], *, new_episode: bool) -> dict[str, np.ndarray]:
        """The env's torch observation as a numpy dict of the chosen form (updating the glimpse history)."""
        if self.observation_form == "glimpse":
            return {key: _np(value) for key, value in obs.items()}
        t = int(obs["t"][0])  # every environment is at the same step
        if new_episode:
            self._history_glimpses.zero_()
            self._history_locations.zero_()
        self._history_glimpses[:, t] = obs["glimpse"]
        self._history_locations[:, t] = obs["location"]
        return {
            "glimpses": _np(self._history_glimpses).copy(),
            "locations": _np(self._history_locations).copy(),
            "t": _np(obs["t"]),
        }


def _np(value) -> np.ndarray:
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def make_sb3_vec_env(
    env_id: str = "RAM/MNIST-v0",
    *,
    n_envs: int = 16,
    observation_form: str = "glimpse",
    device: str | torch.device = "cpu",
    mc_samples: int = 1,
    **overrides: Any,
) -> SB3VecEnvAdapter:
    """An :class:`SB3VecEnvAdapter` over ``n_envs`` environments of a registered id (defaults, then ``overrides``).

    ``overrides`` are :class:`~ram_env.task.TaskConfig` fields; pass ``action_form="box"`` or ``"grid"``.
    """
    import ram_env  # noqa: F401 - registers the ids

    spec = gym.spec(env_id.removeprefix("ram_env:"))
    kwargs = {**spec.kwargs, **overrides}
    env = GlimpseVectorEnv(n_envs, device=device, mc_samples=mc_samples, **kwargs)
    return SB3VecEnvAdapter(env, observation_form=observation_form)
