"""``--algo auxppo``: sb3-contrib's RecurrentPPO with the RAM paper's hybrid loss (a cross-entropy phase on the
true labels after each PPO update)."""

from __future__ import annotations

import math
from typing import Any, NamedTuple, cast

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from sb3_contrib import RecurrentPPO
from sb3_contrib.common.recurrent.buffers import RecurrentDictRolloutBuffer
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy


class AuxRolloutBufferSamples(NamedTuple):
    observations: dict[str, torch.Tensor]
    actions: torch.Tensor
    old_values: torch.Tensor
    old_log_prob: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    lstm_states: Any
    episode_starts: torch.Tensor
    mask: torch.Tensor
    labels: torch.Tensor  # true class at each episode's last step, -1 elsewhere


class LabelledRecurrentDictRolloutBuffer(RecurrentDictRolloutBuffer):
    """sb3-contrib's recurrent dict rollout buffer plus ``labels`` ``(n_steps, n_envs)``: the true class of the
    episode at its last step (the step whose action names the class), -1 at every other step."""

    def reset(self) -> None:
        super().reset()
        self.labels = np.full((self.buffer_size, self.n_envs), -1, dtype=np.int64)

    def get(self, batch_size: int | None = None):
        if not self.generator_ready:
            self.labels = self.swap_and_flatten(self.labels)
        yield from super().get(batch_size)

    # sb3-contrib's own _get_samples already departs from SB3's signature (env_change); ours returns its samples
    # with labels added, a NamedTuple that cannot subclass theirs.
    def _get_samples(  # type: ignore[override]
        self, batch_inds: np.ndarray, env_change: np.ndarray, env=None
    ) -> AuxRolloutBufferSamples:
        samples = super()._get_samples(batch_inds, env_change, env)
        labels = self.pad_and_flatten(self.labels[batch_inds]).long()  # padding reads 0; it is masked out
        return AuxRolloutBufferSamples(*samples, labels=labels)


class AuxiliaryRecurrentPPO(RecurrentPPO):
    """RecurrentPPO with the RAM paper's hybrid loss: PPO trains the policy, cross-entropy trains the classifier.

    The classifier is the class part of the policy's ``grid`` action head (``MultiDiscrete([G, G, n])``): the
    categorical over the ``n`` classes, computed from the LSTM latent, so the head that names the class in the
    environment is the one the cross-entropy trains. The true labels come from ``info["label"]`` at each episode's
    last step (where the class is read) and are stored with the rollout (:class:`LabelledRecurrentDictRolloutBuffer`).

    Each update runs sb3-contrib's PPO update unchanged, then an auxiliary phase (as in Phasic Policy Gradient,
    Cobbe et al. 2021): ``aux_epochs`` passes over the same rollout minimising ``aux_coef * CE(class logits, label)``
    with the policy's optimizer. The cross-entropy reaches the LSTM and the glimpse network, as in the paper; the
    location choices learn from the reward only (through PPO).

    Registered as ``--algo auxppo``. Needs the ``grid`` action form and a ``Dict`` observation.

    :param aux_coef: weight of the cross-entropy term.
    :param aux_epochs: passes over each rollout in the auxiliary phase (default: ``n_epochs``, so the classifier gets
        as many gradient steps as the policy).
    """

    def __init__(self, *args: Any, aux_coef: float = 1.0, aux_epochs: int | None = None, **kwargs: Any):
        self.aux_coef = aux_coef
        super().__init__(*args, **kwargs)
        self.aux_epochs = self.n_epochs if aux_epochs is None else aux_epochs

    def _setup_model(self) -> None:
        super()._setup_model()
        if not isinstance(self.action_space, spaces.MultiDiscrete):
            raise ValueError(
                "AuxiliaryRecurrentPPO needs the 'grid' action form (MultiDiscrete); "
                f"got {type(self.action_space).__name__}"
            )
        old = cast(RecurrentDictRolloutBuffer, self.rollout_buffer)  # RecurrentPPO's buffer for Dict observations
        self.rollout_buffer = LabelledRecurrentDictRolloutBuffer(
            self.n_steps,
            self.observation_space,
            self.action_space,
            old.hidden_state_shape,
            self.device,
            gamma=self.gamma,
            gae_lambda=self.gae_lambda,
            n_envs=self.n_envs,
        )

    def _update_info_buffer(self, infos: list[dict[str, Any]], dones: np.ndarray | None = None) -> None:
        super()._update_info_buffer(infos, dones)
        buffer = self.rollout_buffer
        if isinstance(buffer, LabelledRecurrentDictRolloutBuffer) and dones is not None and not buffer.full:
            # Called right after env.step and before rollout_buffer.add: buffer.pos is this step's row.
            buffer.labels[buffer.pos] = [
                int(info["label"]) if done and "label" in info else -1 for info, done in zip(infos, dones, strict=True)
            ]

    def train(self) -> None:
        """sb3-contrib's PPO update, then the auxiliary cross-entropy phase on the same rollout."""
        super().train()
        self.policy.set_training_mode(True)
        losses, accuracies = [], []
        policy = cast(RecurrentActorCriticPolicy, self.policy)
        for _ in range(self.aux_epochs):
            for samples in self.rollout_buffer.get(self.batch_size):
                data = cast(AuxRolloutBufferSamples, samples)  # from LabelledRecurrentDictRolloutBuffer
                labelled = (data.mask > 1e-8) & (data.labels >= 0)  # episode ends, not sequence padding
                if not bool(labelled.any()):
                    continue
                # sb3-contrib annotates the observation as a Tensor; a MultiInputLstmPolicy takes the dict.
                distribution, _ = policy.get_distribution(
                    data.observations,  # type: ignore[arg-type]
                    data.lstm_states.pi,
                    data.episode_starts,
                )
                heads = cast(list[torch.distributions.Categorical], distribution.distribution)  # one per grid dimension
                class_logits = heads[-1].logits[labelled]  # (L, n_classes)
                ce = F.cross_entropy(class_logits, data.labels[labelled])
                self.policy.optimizer.zero_grad()
                (self.aux_coef * ce).backward()
                torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
                self.policy.optimizer.step()
                losses.append(ce.item())
                accuracies.append((class_logits.argmax(1) == data.labels[labelled]).float().mean().item())
        self.last_aux_cross_entropy = _mean(losses)
        self.last_aux_accuracy = _mean(accuracies)
        self.logger.record("train/aux_cross_entropy", self.last_aux_cross_entropy)
        self.logger.record("train/aux_accuracy", self.last_aux_accuracy)


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else math.nan
