"""``train_agent.py --algo NAME``: training a stable-baselines3 / sb3-contrib algorithm with SB3's own machinery
(the batched env behind ``SB3VecEnvAdapter`` in ``VecMonitor``, ``EvalCallback`` on the validation split, TensorBoard),
writing this project's run directory and checkpoints."""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stable_baselines3.common.callbacks import BaseCallback, CallbackList, EvalCallback
from stable_baselines3.common.vec_env import VecMonitor

from agents.checkpoint import save_checkpoint
from agents.config import TrainConfig, TrainingInterrupted, UserError
from agents.runs import (
    RunLock,
    StopFlag,
    default_run_dir,
    env_kwargs_for,
    finished_run,
    load_resume_state,
    prepare_run_dir,
    resolve_device,
    set_seed,
    write_json,
)
from agents.sb3.algorithms import algorithm_setup, algorithm_spec, load_sb3_model, make_adapter, model_to_tensor
from ram_env.seeding import stream_seed
from ram_env.task import Task, TaskConfig


class _CheckpointWriter(BaseCallback):
    """Writes ``last.pt`` (after each evaluation, as ``callback_after_eval``) or ``best.pt`` (``on_new_best``)."""

    def __init__(self, write, name: str):
        super().__init__()
        self._write, self._name = write, name

    def _on_step(self) -> bool:
        self._write(self.model, self._name)
        return True


class _RecordCurve(BaseCallback):
    """Appends ``[environment steps, success()]`` to ``curve`` (as an ``EvalCallback``'s ``callback_after_eval``,
    ``success`` reads its ``last_mean_reward``, the success rate: rewards are 1 or 0)."""

    def __init__(self, curve: list[list[float]], success: Callable[[], float]):
        super().__init__()
        self.curve, self._success = curve, success

    def _on_step(self) -> bool:
        self.curve.append([int(self.model.num_timesteps), float(self._success())])
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


class _PeriodicCheckpoint(BaseCallback):
    """Writes ``last.pt`` every ``every`` environment steps of this invocation (``--checkpoint-every``)."""

    def __init__(self, write, every: int):
        super().__init__()
        self._write, self._every = write, every
        self._next = every

    def _on_training_start(self) -> None:
        self._next = self.model.num_timesteps + self._every

    def _on_step(self) -> bool:
        if self.model.num_timesteps >= self._next:
            self._write(self.model, "last.pt")
            self._next = self.model.num_timesteps + self._every
        return True


class _StopWhen(BaseCallback):
    """Ends ``learn`` at the next environment step once the :class:`~agents.runs.StopFlag` is set or the wall-clock
    ``deadline`` (``time.perf_counter()`` seconds; ``None``: none) has passed; ``reason`` says which."""

    def __init__(self, stop: StopFlag, deadline: float | None):
        super().__init__()
        self._stop, self._deadline = stop, deadline
        self.reason: str | None = None

    def _on_step(self) -> bool:
        if self._stop.requested:
            self.reason = "interrupted"
        elif self._deadline is not None and time.perf_counter() > self._deadline:
            self.reason = "time limit"
        return self.reason is None


def train_sb3(config: TrainConfig, *, progress: bool = True, stop: StopFlag | None = None) -> dict[str, Any]:
    """Train (or resume) an SB3 / sb3-contrib algorithm; returns the summary (also in ``summary.json``).

    Writes ``config.json``, ``last.pt`` (after every evaluation, every ``config.checkpoint_every`` environment steps
    and at the end), ``best.pt`` (highest validation success rate of the deterministic policy), TensorBoard logs in
    ``tb/`` and ``summary.json`` in the run directory; the checkpoints and the summary hold ``validation_curve``,
    ``[environment steps, validation success]`` after each of the five evaluations. ``config.time_limit`` (minutes of
    this invocation) ends training early, after one more evaluation, with ``summary["stopped"] == "time limit"``;
    ``--resume`` goes on from there; resuming a run that has trained its whole budget changes nothing.

    :param config: with ``config.resume`` set, the resumed run's configuration (``agents.runs.resume_config``).
    :param stop: training ends (with ``last.pt`` written, raising :class:`TrainingInterrupted`) at the first
        environment step after ``stop.requested`` turns true.
    """
    name, spec = algorithm_spec(config.algo)
    finished = finished_run(config)  # a resumed run that has trained its whole budget is left as it is
    if finished is not None:
        return finished
    stop = stop or StopFlag()
    state: dict[str, Any] | None = None
    curve: list[list[float]] = []  # [environment steps, validation success] after each evaluation
    setup = algorithm_setup(name, spec, config)
    if config.resume is not None:
        state, run_dir = load_resume_state(config, name)
        env_kwargs = dict(state["env_kwargs"])
    else:
        run_dir = Path(config.output) if config.output else default_run_dir(config)
        env_kwargs = env_kwargs_for(config, setup.env_kwargs)  # the file's action form, unless --env-args names one
        if env_kwargs["action_form"] != spec.action_form:  # refused, not replaced: the run would not be the one asked
            raise UserError(
                f"--algo {name} trains with action_form {spec.action_form!r}, not {env_kwargs['action_form']!r}: drop "
                "action_form from --env-args (each algorithm has one action form; the form's own arguments, such as "
                "grid_size, can be set there)"
            )
    # config.json and the checkpoints record the budget and the number of environments actually used.
    config = dataclasses.replace(config, n_envs=setup.n_envs, total_timesteps=setup.total_timesteps)
    assert config.n_envs is not None and config.total_timesteps is not None
    device = resolve_device(config.device)
    set_seed(config.seed)
    train_env = VecMonitor(
        make_adapter({**env_kwargs, "split": "train"}, config.n_envs, spec.observation_form, device=device)
    )
    train_env.seed(stream_seed(config.seed, "sb3/env"))
    # Validation scores the paper's reward (1 for the right class) whatever the training reward, so that the mean
    # episode reward EvalCallback reports is the success rate.
    val_kwargs = {**env_kwargs, "split": "validation", "ordered": True, "reward": "correct"}
    val_images = min(1000, len(Task(TaskConfig.from_kwargs(**val_kwargs)).data))
    eval_env = VecMonitor(make_adapter(val_kwargs, val_images, spec.observation_form, device=device))
    # Everything a user can get wrong (algorithm, device, environment arguments, data) has failed by now, before the
    # run directory is touched.
    with RunLock(run_dir):  # a second live writer of this directory fails here
        if state is None:
            prepare_run_dir(run_dir, overwrite=config.overwrite)
        write_json(run_dir / "config.json", dataclasses.asdict(config))

        cls = spec.load_class()
        tb_dir = str(run_dir / "tb")
        if state is not None:
            model = load_sb3_model(state, env=train_env, device=device, tensorboard_log=tb_dir)
            best, elapsed = state.get("best_val_success", -math.inf), state.get("wall_time", 0.0)
            curve.extend(list(point) for point in state.get("validation_curve", []))
        else:
            model = cls(
                setup.policy,
                train_env,
                seed=config.seed,
                device=device,
                tensorboard_log=tb_dir,
                verbose=0,
                **setup.model_kwargs,
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
                "validation_curve": curve,
            }
            save_checkpoint(payload, run_dir / filename)

        # Rewards are 1 for a correct class and 0 otherwise, so the mean episode reward is the success rate.
        evaluation = EvalCallback(
            eval_env,
            n_eval_episodes=val_images,
            eval_freq=max(1, config.total_timesteps // (5 * config.n_envs)),
            deterministic=True,
            callback_on_new_best=_CheckpointWriter(write, "best.pt"),
            callback_after_eval=CallbackList(
                [_RecordCurve(curve, lambda: evaluation.last_mean_reward), _CheckpointWriter(write, "last.pt")]
            ),
            verbose=0,
        )
        evaluation.best_mean_reward = best
        # The time limit counts this invocation's wall time (a resumed run gets the whole limit again), as the RAM
        # trainer's does.
        deadline = None if config.time_limit is None else start + 60 * config.time_limit
        stopper = _StopWhen(stop, deadline)
        callbacks: list[BaseCallback] = [evaluation, stopper]
        if config.checkpoint_every is not None:
            callbacks.append(_PeriodicCheckpoint(write, config.checkpoint_every))
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
        if stopper.reason == "time limit" and (not curve or curve[-1][0] != model.num_timesteps):
            # As the RAM trainer does: score the weights the run stops with (so best.pt exists and the curve ends here).
            evaluation.n_calls = evaluation.eval_freq - 1  # on_step() counts this call, which then evaluates
            evaluation.on_step()
        write(model, "last.pt")
        train_env.close()
        eval_env.close()
        if stop.requested:
            raise TrainingInterrupted(run_dir / "last.pt")
        if model.num_timesteps > config.total_timesteps:
            # On-policy algorithms collect whole rollouts (n_steps x n_envs environment steps) before they stop.
            print(
                f"note: trained {model.num_timesteps} environment steps for --total-timesteps "
                f"{config.total_timesteps}: {name} stops only after a whole rollout "
                f"({_rollout_steps(model)} steps with --n-envs {config.n_envs})",
                file=sys.stderr,
            )
        summary = {
            "run_dir": str(run_dir),
            "algo": name,
            "timesteps": int(model.num_timesteps),
            "requested_timesteps": config.total_timesteps,
            "wall_time": round(elapsed + time.perf_counter() - start, 2),
            "best_val_success": None if math.isinf(evaluation.best_mean_reward) else evaluation.best_mean_reward,
            "stopped": stopper.reason,  # None: the budget was trained; "time limit": resume to go on
            "action_form": spec.action_form,
            "observation_form": spec.observation_form,
            "device": str(device),
            "validation_curve": curve,
        }
        write_json(run_dir / "summary.json", summary)
        return summary


def _rollout_steps(model) -> int:
    """Environment steps an algorithm takes between two checks of its budget."""
    return int(getattr(model, "n_steps", 1) * model.n_envs)
