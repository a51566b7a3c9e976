"""The SB3 actor-critic policies credit only the action parts the environment uses: the location before the last
glimpse, the class at it (``mask_unused_actions``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces
from sb3_contrib.common.recurrent.type_aliases import RNNStates
from stable_baselines3.common.torch_layers import CombinedExtractor

from agents.sb3.policies import GlimpseActorCriticPolicy, GlimpseLstmPolicy
from ram_env.sb3 import make_sb3_vec_env

TINY = dict(dataset="tiny", glimpses=3, glimpse_size=4, num_scales=2)
STEPS = 3


def _episode_obs(action_form: str, observation_form: str):
    """The observations of one episode of 2 envs, stacked in step order: ``(STEPS * 2, ...)`` with ``t`` 0, 0, 1, 1,
    2, 2; and the venv."""
    venv = make_sb3_vec_env(n_envs=2, action_form=action_form, observation_form=observation_form, **TINY)
    venv.seed(0)
    venv.action_space.seed(0)
    obs, seen = venv.reset(), []
    for _ in range(STEPS):
        seen.append(obs)
        obs, *_ = venv.step(np.stack([venv.action_space.sample() for _ in range(2)]))
    batch = {k: torch.as_tensor(np.concatenate([o[k] for o in seen])) for k in seen[0]}
    np.testing.assert_array_equal(batch["t"].numpy(), [0, 0, 1, 1, 2, 2])
    return batch, venv


def _policy(cls, venv, **kwargs):
    torch.manual_seed(0)
    return cls(venv.observation_space, venv.action_space, lambda _: 1e-3, **kwargs)


def _actions(action_form: str, seed: int) -> torch.Tensor:
    """``(6, D)`` actions of the tiny task (4 classes): ``grid`` cells ``(x, y, class)`` of the 9 x 9 grid, or
    ``box`` values ``(x, y, 4 class scores)``."""
    g = torch.Generator().manual_seed(seed)
    if action_form == "grid":
        return torch.stack([torch.randint(0, n, (6,), generator=g) for n in (9, 9, 4)], dim=1)
    return torch.rand(6, 6, generator=g) * 2 - 1


def _changed(actions: torch.Tensor, part: str, seed: int) -> torch.Tensor:
    """``actions`` with only their location (first two parts) or only their class (the rest) changed in every row."""
    out = actions.clone()
    cols = slice(0, 2) if part == "location" else slice(2, None)
    if actions.dtype == torch.int64:  # grid: shift each cell by 1 to 3 places, modulo its count
        sizes = torch.tensor([9, 9, 4])[cols]
        shift = torch.randint(1, 4, out[:, cols].shape, generator=torch.Generator().manual_seed(seed))
        out[:, cols] = (out[:, cols] + shift) % sizes
    else:
        out[:, cols] = -out[:, cols] + 0.1
    assert (out[:, cols] != actions[:, cols]).all()
    return out


LOCATION_STEPS, LAST_STEP = torch.tensor([True, True, True, True, False, False]), torch.tensor([False] * 4 + [True] * 2)


@pytest.mark.parametrize("action_form", ["grid", "box"])
def test_log_prob_ignores_the_class_before_the_last_glimpse_and_the_location_at_it(action_form):
    obs, venv = _episode_obs(action_form, "history")
    policy = _policy(GlimpseActorCriticPolicy, venv)
    a = _actions(action_form, 1)
    with torch.no_grad():
        _, base, _ = policy.evaluate_actions(obs, a)
        _, new_class, _ = policy.evaluate_actions(obs, _changed(a, "class", 2))
        _, new_location, _ = policy.evaluate_actions(obs, _changed(a, "location", 3))
    torch.testing.assert_close(base[LOCATION_STEPS], new_class[LOCATION_STEPS])  # class ignored at t = 0, 1
    torch.testing.assert_close(base[LAST_STEP], new_location[LAST_STEP])  # location ignored at t = 2
    # and the part that is used counts: a different location changes the log-probability before the last glimpse
    assert (base[LOCATION_STEPS] != new_location[LOCATION_STEPS]).all()
    assert (base[LAST_STEP] != new_class[LAST_STEP]).all()


def test_masked_log_prob_and_entropy_are_the_used_heads_and_forward_agrees():
    obs, venv = _episode_obs("grid", "history")
    masked = _policy(GlimpseActorCriticPolicy, venv)
    plain = _policy(GlimpseActorCriticPolicy, venv, mask_unused_actions=False)
    plain.load_state_dict(masked.state_dict())
    a = _actions("grid", 1)
    with torch.no_grad():
        _, log_prob, entropy = masked.evaluate_actions(obs, a)
        _, full_log_prob, full_entropy = plain.evaluate_actions(obs, a)
        heads = plain.get_distribution(obs).distribution  # [x, y, class] categoricals
        per_head = torch.stack([h.log_prob(a[:, i]) for i, h in enumerate(heads)], 1)  # (6, 3)
        per_entropy = torch.stack([h.entropy() for h in heads], 1)  # (6, 3)
    torch.testing.assert_close(full_log_prob, per_head.sum(1))  # SB3's sum over every part
    torch.testing.assert_close(log_prob[LOCATION_STEPS], per_head[LOCATION_STEPS, :2].sum(1))
    torch.testing.assert_close(log_prob[LAST_STEP], per_head[LAST_STEP, 2])
    torch.testing.assert_close(entropy[LOCATION_STEPS], per_entropy[LOCATION_STEPS, :2].sum(1))
    torch.testing.assert_close(entropy[LAST_STEP], per_entropy[LAST_STEP, 2])
    # forward (the rollout's old log-probability) uses the same mask as evaluate_actions (the update's)
    with torch.no_grad():
        actions, _, forward_log_prob = masked(obs)
        _, again, _ = masked.evaluate_actions(obs, actions)
    torch.testing.assert_close(forward_log_prob, again)
    assert masked._unused is None  # the mask does not outlive the call


def test_recurrent_policy_masks_too():
    obs, venv = _episode_obs("grid", "glimpse")
    policy = _policy(GlimpseLstmPolicy, venv)
    # one sequence of 3 steps per env, in the rollout buffer's env-major order: (env 0: t 0, 1, 2), (env 1: ...)
    order = torch.tensor([0, 2, 4, 1, 3, 5])
    obs = {k: v[order] for k, v in obs.items()}
    shape = (policy.lstm_actor.num_layers, 2, policy.lstm_actor.hidden_size)
    zeros = (torch.zeros(shape), torch.zeros(shape))
    states, starts = RNNStates(zeros, zeros), torch.tensor([1.0, 0, 0, 1, 0, 0])
    a = _actions("grid", 1)[order]
    with torch.no_grad():
        _, base, _ = policy.evaluate_actions(obs, a, states, starts)
        _, new_class, _ = policy.evaluate_actions(obs, _changed(a, "class", 2), states, starts)
    used_location = obs["t"].reshape(-1) < STEPS - 1
    torch.testing.assert_close(base[used_location], new_class[used_location])
    assert (base[~used_location] != new_class[~used_location]).all()


def test_mask_needs_a_step_and_a_grid_or_box_action():
    _, venv = _episode_obs("grid", "history")

    no_t = spaces.Dict({k: v for k, v in venv.observation_space.spaces.items() if k != "t"})
    with pytest.raises(ValueError, match="observation's 't'"):  # (SB3's extractor: the glimpse network reads 't')
        GlimpseActorCriticPolicy(no_t, venv.action_space, lambda _: 1e-3, features_extractor_class=CombinedExtractor)
    with pytest.raises(ValueError, match="'grid' or 'box' action form"):
        GlimpseActorCriticPolicy(venv.observation_space, spaces.Discrete(4), lambda _: 1e-3)
    GlimpseActorCriticPolicy(venv.observation_space, spaces.Discrete(4), lambda _: 1e-3, mask_unused_actions=False)
