"""stable-baselines3 / sb3-contrib algorithms on the glimpse tasks: training, checkpoints and evaluation.

``train_agent.py --algo NAME`` (any name but ``ram``) runs :func:`train_sb3`; ``evaluate.py`` scores the checkpoints
it writes through :func:`evaluate_sb3_checkpoint`. Everything SB3 does is SB3's own machinery: the batched torch env
behind :class:`~ram_env.sb3.SB3VecEnvAdapter` wrapped in ``VecMonitor``, ``EvalCallback`` on the validation split,
TensorBoard logs and SB3's ``rollout/success_rate`` from ``info["is_success"]``.

Which form each algorithm gets (:data:`ALGORITHMS`):

=====================================  ============  ===============  ========================  =======================
algorithm (``--algo``)                 kind          action form      observation form          policy
=====================================  ============  ===============  ========================  =======================
``ppo``, ``a2c``, ``trpo``             on-policy     ``grid``         ``history``               MultiInputPolicy
``sac``, ``td3``, ``ddpg``, ``tqc``    off-policy    ``box``          ``history``               MultiInputPolicy
``recurrentppo``                       recurrent     ``grid``         ``glimpse``               MultiInputLstmPolicy
``auxppo`` (:class:`AuxiliaryRecurrentPPO`)  recurrent  ``grid``     ``glimpse``               MultiInputLstmPolicy
=====================================  ============  ===============  ========================  =======================

*Why:* SAC/TD3/DDPG/TQC only accept ``Box`` actions. The on-policy ones get ``grid`` (``MultiDiscrete``) because the
label is a categorical choice: a categorical head names a class directly, while a Gaussian over ``n`` class scores
followed by argmax is a poorly conditioned way to pick one. Feed-forward policies see the ``history`` form (every
glimpse so far), which makes the problem Markov; recurrent ones see one glimpse per step and remember with their
LSTM, as the paper's core network does. Every policy uses :class:`GlimpseFeaturesExtractor` (the paper's glimpse
network). DQN and QR-DQN are not offered: they need a ``Discrete`` action space and the task's action is a tuple.

Hyperparameters are SB3's defaults except where the task needs otherwise (see :func:`algorithm_kwargs`);
``--learning-rate`` replaces SB3's default only when it is set to something other than the RAM default (1e-3).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import io
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, cast

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from sb3_contrib import RecurrentPPO
from sb3_contrib.common.recurrent.buffers import RecurrentDictRolloutBuffer
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from stable_baselines3.common.callbacks import BaseCallback, CallbackList, EvalCallback
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.vec_env import VecMonitor
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs
from torch import nn

from agents.checkpoint import save_checkpoint
from agents.config import TrainConfig, UserError
from agents.evaluation import EvaluationResult, make_report
from ram_env.sb3 import SB3VecEnvAdapter
from ram_env.seeding import stream_seed
from ram_env.task import Task, TaskConfig
from ram_env.vector import GlimpseVectorEnv

# ---------------------------------------------------------------------------------------------------------------------
# The glimpse network as an SB3 features extractor


class GlimpseFeaturesExtractor(BaseFeaturesExtractor):
    """The paper's glimpse network as an SB3 features extractor, for both observation forms.

    ``h_g = ReLU(Linear(rho))``, ``h_l = ReLU(Linear(l))``, ``g_t = ReLU(Linear([h_g, h_l]))`` (one product over the
    concatenation is ``Linear(h_g) + Linear(h_l)``).

    * ``"glimpse"`` form (``glimpse``, ``location``, ``t``): the features are ``g_t`` (``glimpse_out`` values); ``t``
      is not used, as in the paper (the recurrent core keeps time).
    * ``"history"`` form (``glimpses`` ``(T, k, C, g, g)``, ``locations`` ``(T, 2)``, ``t``): the same network is
      applied to every time slot; slots after ``t`` (glimpses not taken yet) are zeroed, and the ``T`` vectors are
      flattened in slot order (the slot position is the time embedding) and followed by the one-hot ``t``:
      ``T * glimpse_out + T`` features.

    :param observation_space: a ``Dict`` of either form.
    :param glimpse_hidden: units of ``h_g`` and ``h_l`` (128 in the paper).
    :param glimpse_out: units of ``g_t`` (256 in the paper).
    """

    def __init__(self, observation_space: spaces.Dict, glimpse_hidden: int = 128, glimpse_out: int = 256):
        self.history = "glimpses" in observation_space.spaces
        steps = int(cast(spaces.Discrete, observation_space["t"]).n)
        shape = cast(spaces.Box, observation_space["glimpses" if self.history else "glimpse"]).shape
        glimpse_shape = shape[1:] if self.history else shape  # (k, C, g, g)
        super().__init__(observation_space, steps * glimpse_out + steps if self.history else glimpse_out)
        self.what = nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(glimpse_shape)), glimpse_hidden), nn.ReLU())
        self.where = nn.Sequential(nn.Linear(2, glimpse_hidden), nn.ReLU())
        self.combine = nn.Linear(2 * glimpse_hidden, glimpse_out)

    def glimpse_network(self, glimpse: torch.Tensor, location: torch.Tensor) -> torch.Tensor:
        """``g_t`` ``(B, glimpse_out)`` from glimpses ``(B, k, C, g, g)`` and locations ``(B, 2)``."""
        return torch.relu(self.combine(torch.cat([self.what(glimpse), self.where(location)], dim=1)))

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        if not self.history:
            return self.glimpse_network(observations["glimpse"], observations["location"])
        glimpses = observations["glimpses"]  # (B, T, k, C, g, g)
        batch, steps = glimpses.shape[:2]
        t_onehot = observations["t"].reshape(batch, steps)  # (B, T), one-hot by SB3's preprocessing
        taken = t_onehot.flip(1).cumsum(1).flip(1).flatten() > 0.5  # (B * T,): slots 0..t of each row
        # The glimpse network runs on the slots taken only; the others stay zero.
        g = glimpses.new_zeros(batch * steps, self.combine.out_features)  # (B * T, D)
        g[taken] = self.glimpse_network(glimpses.flatten(0, 1)[taken], observations["locations"].flatten(0, 1)[taken])
        return torch.cat([g.reshape(batch, -1), t_onehot], dim=1)  # (B, T * D + T)


# ---------------------------------------------------------------------------------------------------------------------
# RecurrentPPO with the paper's hybrid loss


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


# ---------------------------------------------------------------------------------------------------------------------
# The algorithms


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
    "auxppo": AlgorithmSpec("agents.sb3", "AuxiliaryRecurrentPPO", *_REC),
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


# ---------------------------------------------------------------------------------------------------------------------
# Checkpoints: the SB3 zip inside our format


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


class _CheckpointWriter(BaseCallback):
    """Writes ``last.pt`` (after each evaluation, as ``callback_after_eval``) or ``best.pt`` (``on_new_best``)."""

    def __init__(self, write, name: str):
        super().__init__()
        self._write, self._name = write, name

    def _on_step(self) -> bool:
        self._write(self.model, self._name)
        return True


class _TqdmProgress(BaseCallback):
    """A plain-tqdm progress bar (SB3's own needs ``rich``, which may not be installed)."""

    def _on_training_start(self) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=self.locals["total_timesteps"] - self.model.num_timesteps, unit="step", smoothing=0.1)

    def _on_step(self) -> bool:
        self._bar.update(self.training_env.num_envs)
        return True

    def _on_training_end(self) -> None:
        self._bar.close()


def train_sb3(config: TrainConfig, *, progress: bool = True) -> dict[str, Any]:
    """Train (or resume) an SB3 / sb3-contrib algorithm; returns the summary (also in ``summary.json``).

    Writes ``config.json``, ``last.pt`` (after every evaluation and at the end), ``best.pt`` (highest validation
    success rate of the deterministic policy), TensorBoard logs in ``tb/`` and ``summary.json`` in the run directory.
    """
    from agents.trainer import (
        default_run_dir,
        env_kwargs_for,
        load_resume_state,
        prepare_run_dir,
        resolve_device,
        set_seed,
    )

    name, spec = algorithm_spec(config.algo)
    state: dict[str, Any] | None = None
    if config.resume is not None:
        state, saved, run_dir = load_resume_state(config, name)
        # The saved run's settings win; only the length of the run may change.
        config = dataclasses.replace(saved, total_timesteps=config.total_timesteps, resume=config.resume)
        env_kwargs = dict(state["env_kwargs"])
    else:
        run_dir = Path(config.output) if config.output else default_run_dir(config)
        env_kwargs = {**env_kwargs_for(config), "action_form": spec.action_form}
    device = resolve_device(config.device)
    set_seed(config.seed)
    glimpses = int(env_kwargs["glimpses"])
    train_env = VecMonitor(
        make_adapter({**env_kwargs, "split": "train"}, config.n_envs, spec.observation_form, device=device)
    )
    train_env.seed(stream_seed(config.seed, "sb3/env"))
    val_kwargs = {**env_kwargs, "split": "validation", "ordered": True}
    val_images = min(1000, len(Task(TaskConfig.from_kwargs(**val_kwargs)).data))
    eval_env = VecMonitor(make_adapter(val_kwargs, val_images, spec.observation_form, device=device))
    # Everything a user can get wrong (algorithm, device, environment arguments, data) has failed by now, before the
    # run directory is touched.
    if state is None:
        prepare_run_dir(run_dir, overwrite=config.overwrite)
    (run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2) + "\n")

    cls = spec.load_class()
    tb_dir = str(run_dir / "tb")
    if state is not None:
        model = load_sb3_model(state, env=train_env, device=device, tensorboard_log=tb_dir)
        best, elapsed = state.get("best_val_success", -math.inf), state.get("wall_time", 0.0)
    else:
        kwargs = algorithm_kwargs(spec, config, glimpses)
        model = cls(
            spec.policy, train_env, seed=config.seed, device=device, tensorboard_log=tb_dir, verbose=0, **kwargs
        )
        best, elapsed = -math.inf, 0.0
    start = time.perf_counter()

    def write(model, filename: str) -> None:
        payload = {
            "algo": name,
            "env_id": config.env,
            "env_kwargs": env_kwargs,
            "observation_form": spec.observation_form,
            "config": dataclasses.asdict(config),
            "sb3_model": model_to_tensor(model),
            "num_timesteps": int(model.num_timesteps),
            "best_val_success": float(evaluation.best_mean_reward),
            "wall_time": elapsed + time.perf_counter() - start,
        }
        save_checkpoint(payload, run_dir / filename)

    # Rewards are 1 for a correct class and 0 otherwise, so the mean episode reward is the success rate.
    evaluation = EvalCallback(
        eval_env,
        n_eval_episodes=val_images,
        eval_freq=max(1, config.total_timesteps // (5 * config.n_envs)),
        deterministic=True,
        callback_on_new_best=_CheckpointWriter(write, "best.pt"),
        callback_after_eval=_CheckpointWriter(write, "last.pt"),
        verbose=0,
    )
    evaluation.best_mean_reward = best
    callbacks: list[BaseCallback] = [evaluation]
    use_rich = importlib.util.find_spec("rich") is not None
    if progress and not use_rich:
        callbacks.append(_TqdmProgress())
    remaining = config.total_timesteps - model.num_timesteps
    if remaining > 0:
        model.learn(
            remaining,
            callback=CallbackList(callbacks),
            tb_log_name=name,
            reset_num_timesteps=state is None,
            progress_bar=progress and use_rich,
        )
    write(model, "last.pt")
    train_env.close()
    eval_env.close()
    summary = {
        "run_dir": str(run_dir),
        "algo": name,
        "timesteps": int(model.num_timesteps),
        "wall_time": round(elapsed + time.perf_counter() - start, 2),
        "best_val_success": None if math.isinf(evaluation.best_mean_reward) else evaluation.best_mean_reward,
        "action_form": spec.action_form,
        "observation_form": spec.observation_form,
        "device": str(device),
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


# ---------------------------------------------------------------------------------------------------------------------
# Evaluation


def evaluate_sb3_checkpoint(
    payload: dict[str, Any],
    *,
    split: str = "test",
    mc_samples: int = 10,
    device: str | torch.device = "cpu",
    seed: int = 0,
    max_images: int | None = None,
    batch_images: int = 1000,
) -> tuple[EvaluationResult, dict]:
    """Score the SB3 model of a checkpoint on ``split`` like the RAM evaluation: an ordered pass over every image.

    * **sampled**: ``deterministic=False`` (locations and class sampled from the policy), error averaged over the
      ``M = mc_samples`` episodes of every image;
    * **mean location**: ``deterministic=True`` (the policy's mode: mean location for ``box``, most likely cell
      for ``grid``; argmax class);
    * **Monte Carlo**: the majority vote of the ``M`` sampled classes (ties go to the lowest class index). SB3
      policies do not expose one class distribution across action forms, so votes replace averaged probabilities.

    :param max_images: score only the first ``max_images`` images of the split (for quick checks; reported in
        ``EvaluationResult.images``).
    :return: the result (``locations`` ``(images, T, 2)`` from the deterministic pass) and ``evaluate.py``'s report.
    """
    device = torch.device(device)
    _, spec = algorithm_spec(payload["algo"])
    form = payload.get("observation_form", spec.observation_form)
    env_kwargs = {**payload["env_kwargs"], "split": split, "ordered": True}
    task = Task(TaskConfig.from_kwargs(**env_kwargs))
    n_data, n_classes = len(task.data), task.n_classes
    n = min(n_data, max_images) if max_images else n_data
    batch = min(batch_images, n)
    model = load_sb3_model(payload, device=device)
    model.policy.set_training_mode(False)

    def ordered_pass(m: int, deterministic: bool):
        """Yield ``(index, true labels, predicted labels, locations (N, T, 2))`` for each batch of episodes."""
        venv = make_adapter(env_kwargs, batch * m, form, device=device, mc_samples=m)
        venv.seed(stream_seed(seed, "eval/env"))
        obs: VecEnvObs = venv.reset()
        env, steps = venv.env, venv.env.config.glimpses
        for _ in range(math.ceil(n / batch)):
            state, starts = None, np.ones(venv.num_envs, dtype=bool)
            locations, index = [], env.index.cpu().numpy()
            for _t in range(steps):
                locations.append(env.location.cpu().numpy())
                actions, state = model.predict(obs, state=state, episode_start=starts, deterministic=deterministic)
                starts[:] = False
                label = env.task.action_form.decode(actions, batch=venv.num_envs)[1].numpy()
                obs, _, _, infos = venv.step(actions)
            truth = np.array([info["label"] for info in infos])
            yield index, truth, label, np.stack(locations, axis=1)
        venv.close()

    # SB3 samples actions from torch's global generator: seed it (in a fork, leaving the caller's state alone).
    cuda = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(stream_seed(seed, "eval/policy"))
        labels = np.zeros(n, dtype=np.int64)
        votes = np.zeros((n, n_classes), dtype=np.int64)
        wrong, seen = 0, np.zeros(n, dtype=bool)
        for index, truth, pred, _ in ordered_pass(mc_samples, deterministic=False):
            first = (index < n) & ~seen[np.minimum(index, n - 1)]  # drop wrapped repeats and images past max_images
            idx = index[first]
            np.add.at(votes, (idx, pred[first]), 1)
            labels[idx] = truth[first]
            wrong += int((pred[first] != truth[first]).sum())
            seen[idx] = True
        pred_mean = np.zeros(n, dtype=np.int64)
        paths = np.zeros((n, int(env_kwargs["glimpses"]), 2), dtype=np.float32)
        seen_mean = np.zeros(n, dtype=bool)
        for index, _, pred, locations in ordered_pass(1, deterministic=True):
            first = (index < n) & ~seen_mean[np.minimum(index, n - 1)]
            pred_mean[index[first]] = pred[first]
            paths[index[first]] = locations[first]
            seen_mean[index[first]] = True
        assert seen.all() and seen_mean.all(), "an ordered pass missed images"
    pred_mc = votes.argmax(1)
    result = EvaluationResult(
        images=n,
        mc_samples=mc_samples,
        error_sampled=float(100.0 * wrong / (n * mc_samples)),
        error_mean_location=float(100.0 * (pred_mean != labels).mean()),
        error_monte_carlo=float(100.0 * (pred_mc != labels).mean()),
        labels=labels,
        predictions=pred_mc,
        predictions_mean_location=pred_mean,
        locations=paths,
    )
    return result, make_report(payload, result, split, n_classes)
