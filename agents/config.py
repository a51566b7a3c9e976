"""Training configuration: one dataclass, presets for every row of the paper's tables, and the command line.

Precedence: the dataclass defaults, then the preset, then the flags given on the command line. A resumed run starts
from its saved configuration instead, and only the flags given on the command line change it
(``agents.runs.resume_config``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Any, get_type_hints


class UserError(Exception):
    """A mistake the user can fix (bad flag, unknown preset, unusable checkpoint or output directory)."""


class TrainingInterrupted(Exception):
    """Training stopped on SIGINT/SIGTERM after writing a checkpoint; the message says how to resume."""

    def __init__(self, checkpoint) -> None:
        super().__init__(f"interrupted; checkpoint written to {checkpoint}; {resume_hint(checkpoint)}")
        self.checkpoint = checkpoint


def resume_hint(checkpoint) -> str:
    """How to continue from ``checkpoint``, with the data location this run used (a command that works as printed)."""
    program = sys.argv[0] if sys.argv and sys.argv[0] else "train_agent.py"
    program = f"python {program}" if program.endswith(".py") else os.path.basename(program)
    data = os.environ.get("RAM_DATA_DIR")
    if data:
        return (
            f"continue with: RAM_DATA_DIR={os.path.abspath(os.path.expanduser(data))} {program} --resume {checkpoint}"
        )
    return (
        f"continue with: {program} --resume {checkpoint} (set RAM_DATA_DIR=<folder holding mnist/ or omniglot/> "
        "first if the data set is not in ~/.cache/ram_env or in the run's data_dir=...)"
    )


#: ``--algo`` names: the RAM agent, then the stable-baselines3 / sb3-contrib table of :data:`agents.sb3.ALGORITHMS`
#: (listed here so that ``--help`` need not import stable-baselines3; a test keeps the two in step).
ALGO_NAMES = ("ram", "ppo", "a2c", "trpo", "sac", "td3", "ddpg", "tqc", "recurrentppo", "auxppo")

DATA_HELP = (
    "Data sets are read from the data_dir environment argument, else from $RAM_DATA_DIR (point it at the folder "
    "holding mnist/ and omniglot/, e.g. export RAM_DATA_DIR=/path/to/data), else from ~/.cache/ram_env, where MNIST "
    "and CIFAR-10 are downloaded when missing."
)


def _f(default: Any, help: str, **kw: Any) -> Any:  # noqa: A002 - "help" reads best in the table below
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class TrainConfig:
    """Everything a training run needs; written as ``config.json`` beside the run's outputs."""

    env: str = _f("RAM/MNIST-v0", "registered environment id")
    algo: str = _f(
        "ram", "'ram' (the paper's agent) or a stable-baselines3 / sb3-contrib algorithm: " + ", ".join(ALGO_NAMES[1:])
    )
    preset: str | None = _f(None, "a named setting from the paper's tables (see --list-presets)")
    seed: int = _f(1, "seed of the run (data order, initial locations, location noise, weights)")
    device: str = _f("auto", "auto, cpu or cuda (auto picks cuda when available)", choices=("auto", "cpu", "cuda"))
    threads: str = _f(
        "auto",
        "torch CPU threads: N, or auto = $OMP_NUM_THREADS if set, else 1 (more threads than free cores make "
        "training many times slower when other processes share the machine)",
    )
    output: str | None = _f(None, "run directory (default: runs/<env>__<preset or algo>__<seed>__<time>)")
    epochs: int = _f(100, "passes over the training split")
    resume: str | None = _f(None, "continue the run of this checkpoint (a .pt file or a run directory)")
    overwrite: bool = _f(False, "allow writing into an output directory that holds another run")
    time_limit: float | None = _f(
        None, "stop after this many minutes of training in this invocation (validates and checkpoints first)"
    )
    checkpoint_every: int | None = _f(
        None,
        "updates (RAM agent) or environment steps (stable-baselines3 algorithms) between last.pt checkpoints "
        "(default: once per epoch; after each evaluation)",
    )
    # Environment
    glimpses: int | None = _f(None, "glimpses per episode (default: the env's / the preset's)")
    env_args: str | None = _f(
        None, "more environment arguments as key=value,key=value (e.g. dataset=idx:/data/fashion,canvas_size=40)"
    )
    # Optimisation (the seed implementation's: Adam 1e-3 decayed x0.97 every 1000 steps, clip 5)
    batch_size: int = _f(128, "distinct images per update")
    mc_samples: int = _f(1, "Monte Carlo samples M: episodes per image per update")
    learning_rate: float = _f(1e-3, "Adam learning rate")
    lr_decay: float = _f(0.97, "learning rate factor applied every --lr-decay-steps updates")
    lr_decay_steps: int = _f(1000, "updates between learning-rate decays")
    warmup_updates: int = _f(
        0,
        "linear learning-rate warmup: update i (0-based) runs at (i + 1) / N of the scheduled rate for the first N "
        "updates (0 = none; e.g. with a large batch and a scaled-up --learning-rate)",
    )
    weight_decay: float = _f(
        0.0,
        "decoupled weight decay (AdamW's): each update shrinks the weights by learning rate x this (0 = plain Adam)",
    )
    max_grad_norm: float = _f(5.0, "gradient clipping norm")
    precision: str = _f(
        "fp32",
        "fp32, or bf16: the rollout's matrix products in bfloat16 (torch.autocast; weights and optimizer stay fp32)",
        choices=("fp32", "bf16"),
    )
    cuda_graph: bool = _f(
        True,
        "on CUDA, replay the update's batch, rollout, loss and backward as one captured CUDA graph (checked against "
        "the eager update once; --no-cuda-graph trains eagerly). No effect on CPU or under torchrun",
    )
    epoch_images: int | None = _f(None, "images per epoch (default: the whole training split)")
    validate_every_seconds: float | None = _f(
        None,
        "also validate (and write last.pt) whenever this many seconds of wall time have passed since the last "
        "validation, between epochs; for time-to-accuracy curves (default: only at each epoch's end)",
    )
    eval_mc_samples: int = _f(1, "Monte Carlo samples for the per-epoch validation (evaluate.py uses 10)")
    # Agent (agents.ram.RAMConfig)
    core: str = _f("rnn", "core network: rnn or lstm", choices=("rnn", "lstm"))
    hidden_size: int = _f(256, "units of the core state")
    glimpse_hidden: int = _f(128, "units of h_g and h_l")
    glimpse_out: int = _f(256, "units of g_t")
    location_std: float = _f(0.1, "sigma of the Gaussian location policy")
    tanh_mean: bool = _f(True, "squash the location mean with tanh")
    conv_glimpse: bool = _f(False, "convolutional glimpse network (colour images)")
    reinforce_into_core: bool = _f(False, "let the REINFORCE gradient reach the core network")
    location_policy: str = _f(
        "learned",
        "learned (Gaussian policy, REINFORCE) or random (the paper's control: uniform locations, no REINFORCE)",
        choices=("learned", "random"),
    )
    # stable-baselines3 algorithms
    total_timesteps: int | None = _f(
        None, "environment steps for stable-baselines3 algorithms (default: n_timesteps of agents/sb3/hyperparams/)"
    )
    n_envs: int | None = _f(
        None, "parallel environments for stable-baselines3 algorithms (default: n_envs of agents/sb3/hyperparams/)"
    )
    hyperparams: str | None = _f(
        None,
        "stable-baselines3 hyperparameters over the algorithm's file in agents/sb3/hyperparams/, as key=value pairs "
        "(JSON values; policy_kwargs a Python expression), e.g. n_epochs=10,policy_kwargs=dict(net_arch=[64])",
    )

    def ram_config(self):
        from agents.ram import RAMConfig

        names = {f.name for f in dataclasses.fields(RAMConfig)}
        return RAMConfig(**{k: v for k, v in dataclasses.asdict(self).items() if k in names})

    def validate(self) -> None:
        positive = ("epochs", "batch_size", "mc_samples", "lr_decay_steps", "eval_mc_samples", "total_timesteps")
        for name in positive + ("hidden_size", "glimpse_hidden", "glimpse_out", "n_envs"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise UserError(f"--{_flag(name)} must be >= 1, got {getattr(self, name)}")
        if self.seed < 0:
            raise UserError(f"--seed must be >= 0, got {self.seed}")
        for name in ("learning_rate", "location_std", "max_grad_norm"):
            if not getattr(self, name) > 0:
                raise UserError(f"--{_flag(name)} must be > 0, got {getattr(self, name)}")
        if not 0 < self.lr_decay <= 1:
            raise UserError(f"--lr-decay must lie in (0, 1], got {self.lr_decay}")
        if self.glimpses is not None and self.glimpses < 1:
            raise UserError(f"--glimpses must be >= 1, got {self.glimpses}")
        if self.epoch_images is not None and self.epoch_images < 1:
            raise UserError(f"--epoch-images must be >= 1, got {self.epoch_images}")
        if self.checkpoint_every is not None and self.checkpoint_every < 1:
            raise UserError(f"--checkpoint-every must be >= 1, got {self.checkpoint_every}")
        if not self.weight_decay >= 0:
            raise UserError(f"--weight-decay must be >= 0, got {self.weight_decay}")
        if self.warmup_updates < 0:
            raise UserError(f"--warmup-updates must be >= 0, got {self.warmup_updates}")
        if self.validate_every_seconds is not None and not self.validate_every_seconds > 0:
            raise UserError(f"--validate-every-seconds must be > 0, got {self.validate_every_seconds}")
        if self.time_limit is not None and not self.time_limit > 0:
            raise UserError(f"--time-limit must be > 0 minutes, got {self.time_limit}")
        from agents.threads import parse_threads

        try:
            parse_threads(self.threads)
        except ValueError as err:
            raise UserError(f"--{err}") from None


#: Flags that only the RAM agent's trainer reads, and flags that only the stable-baselines3 path reads (whose own
#: learning rate, network sizes and budget come from agents/sb3/hyperparams/ and --hyperparams). A preset is a RAM
#: recipe: with an SB3 algorithm its learning rate would silently replace the algorithm's file's.
RAM_ONLY = (
    "preset",
    "epochs",
    "batch_size",
    "mc_samples",
    "lr_decay",
    "lr_decay_steps",
    "warmup_updates",
    "weight_decay",
    "max_grad_norm",
    "precision",
    "cuda_graph",
    "epoch_images",
    "validate_every_seconds",
    "eval_mc_samples",
    "core",
    "location_std",
    "tanh_mean",
    "conv_glimpse",
    "reinforce_into_core",
    "location_policy",
)
SB3_ONLY = ("total_timesteps", "n_envs", "hyperparams")


def canonical_algo(name: str) -> str:
    """``--algo`` as the project reads it: case-insensitive, ``-`` and ``_`` ignored (``Recurrent-PPO`` ->
    ``recurrentppo``)."""
    return name.lower().replace("-", "").replace("_", "")


def check_flags_apply(algo: str, explicit: dict[str, Any]) -> None:
    """Refuses a flag typed on the command line (``explicit``) that ``--algo algo`` would silently ignore."""
    name = canonical_algo(algo)
    if name not in ALGO_NAMES:
        return  # an unknown algorithm: its own error (with the valid names) comes when it is looked up
    unused = [field for field in (SB3_ONLY if name == "ram" else RAM_ONLY) if field in explicit]
    if not unused:
        return
    flags = ", ".join(f"--{_flag(field)}" for field in unused)
    if name == "ram":
        raise UserError(f"{flags}: only for stable-baselines3 algorithms (--algo ppo, ...), not the RAM agent; drop it")
    raise UserError(
        f"{flags}: only for the RAM agent (--algo ram), not --algo {algo}; drop it (--env and --glimpses name the "
        f"task), and set {algo}'s own settings with --total-timesteps, --n-envs or --hyperparams key=value (e.g. "
        "--hyperparams n_epochs=10)"
    )


def parse_env_args(text: str | None) -> dict[str, Any]:
    """``"a=1,b=x,c=null"`` -> ``{"a": 1, "b": "x", "c": None}`` (values read as JSON where they parse)."""
    out: dict[str, Any] = {}
    for item in filter(None, (text or "").split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--env-args item {item!r} is not key=value; write e.g. --env-args glimpses=4,split=train")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def _flag(name: str) -> str:
    return name.replace("_", "-")


def _preset(env: str, glimpses: int, **extra: Any) -> dict[str, Any]:
    return {"env": env, "glimpses": glimpses, **extra}


# One preset per row of the paper's tables (Mnih et al. 2014): <task>-<glimpses>g.
PRESETS: dict[str, dict[str, Any]] = {
    **{f"mnist-{n}g": _preset("RAM/MNIST-v0", n, epochs=200) for n in (2, 4, 6, 7)},
    **{f"translated60-{n}g": _preset("RAM/TranslatedMNIST60-v0", n, epochs=200) for n in (4, 6, 8)},
    **{f"cluttered60-{n}g": _preset("RAM/ClutteredMNIST60-v0", n, epochs=300) for n in (4, 6, 8)},
    **{f"cluttered100-{n}g": _preset("RAM/ClutteredMNIST100-v0", n, epochs=300) for n in (4, 6, 8)},
    # Weight decay 0.1: test error 27.58 % with mean locations against 29.84 % without, which overfit the 15 training
    # drawings per character (seed 1, README "Omniglot").
    "omniglot-6g": _preset("RAM/Omniglot-v0", 6, core="lstm", epochs=100, weight_decay=0.1),
    # The 6-glimpse rows again with the schedule stretched: k times the epochs, the learning-rate decay k times slower,
    # so the rate falls to the same final value (0.97 ** 78, about 0.09 of the start) over k times as many images. The
    # 200-epoch runs were still improving when their schedules ended (best epochs 185 and 198 of 200).
    "mnist-6g-long": _preset("RAM/MNIST-v0", 6, epochs=600, lr_decay_steps=3000),
    "translated60-6g-long": _preset("RAM/TranslatedMNIST60-v0", 6, epochs=400, lr_decay_steps=2000),
    # Cluttered with an LSTM core (the -gpu variants trained to the end, README "Results"). Cluttered 60, 4 / 6 / 8
    # glimpses: 8.46 / 5.54 / 4.81 % test error against the ReLU core's 9.07 / 7.96 / 6.74 %. Cluttered 100, 4 / 6 /
    # 8 glimpses: 26.05 / 20.92 / 16.97 % against 28.21 / 23.78 / 22.68 %. Each had lower validation error than the
    # ReLU core at nearly every epoch. cluttered60-4g-lstm and cluttered100-{4,6}g-lstm themselves (batch 128, trained
    # to the end): 7.50, 24.73 and 18.93 %, ahead of their -gpu variants at most epochs.
    **{
        f"cluttered{canvas}-{n}g-lstm": _preset(f"RAM/ClutteredMNIST{canvas}-v0", n, core="lstm", epochs=300)
        for canvas in (60, 100)
        for n in (4, 6, 8)
    },
    # The stretched Translated 60 schedule with an LSTM core (-gpu, trained to the end: 1.67 % test error against the
    # ReLU core's 1.95 %, README "Translated MNIST 60 x 60"), and the other two Translated rows with an LSTM core
    # (-gpu, trained to the end, README "Other glimpse counts": 4 glimpses 2.73 % against the ReLU core's 2.97 %,
    # 8 glimpses 1.82 % against 2.69 %).
    "translated60-6g-long-lstm": _preset("RAM/TranslatedMNIST60-v0", 6, core="lstm", epochs=400, lr_decay_steps=2000),
    **{f"translated60-{n}g-lstm": _preset("RAM/TranslatedMNIST60-v0", n, core="lstm", epochs=200) for n in (4, 8)},
    # The seed implementation's CIFAR-10 setting: 4 glimpses of 8 x 8, LSTM core, convolutional glimpse network.
    "cifar10-4g": _preset("RAM/CIFAR10-v0", 4, core="lstm", conv_glimpse=True, epochs=100),
}

#: Batch size of the ``*-gpu`` presets: enough episodes per update to keep a GPU busy.
GPU_BATCH = 1024
#: Linear learning-rate warmup of the ``*-gpu`` presets, in updates (about one MNIST epoch at batch 1024).
GPU_WARMUP_UPDATES = 50


def large_batch(recipe: dict[str, Any], batch_size: int = GPU_BATCH) -> dict[str, Any]:
    """The large-batch rule: ``recipe`` (a preset, made for batch 128) at ``batch_size`` episodes per update.

    With ``k = batch_size / 128``: the learning rate grows with ``sqrt(k)`` (square-root scaling), the staircase decay
    comes every ``lr_decay_steps / k`` updates (so the rate against images seen is the recipe's), a weight decay grows
    with ``sqrt(k)`` too (so the shrink ``learning rate x weight decay`` per image seen is the recipe's), and the first
    :data:`GPU_WARMUP_UPDATES` updates warm the rate up linearly. Epochs are the recipe's.
    """
    defaults = TrainConfig()
    k = batch_size / defaults.batch_size
    learning_rate = recipe.get("learning_rate", defaults.learning_rate) * math.sqrt(k)
    decay_steps = max(1, round(recipe.get("lr_decay_steps", defaults.lr_decay_steps) / k))
    return {
        **recipe,
        "batch_size": batch_size,
        "learning_rate": float(f"{learning_rate:.3g}"),
        "lr_decay_steps": decay_steps,
        "warmup_updates": GPU_WARMUP_UPDATES,
        **({"weight_decay": float(f"{recipe['weight_decay'] * math.sqrt(k):.3g}")} if "weight_decay" in recipe else {}),
    }


# Each preset again as <name>-gpu under the large-batch rule (for a GPU, where batch 128 leaves it idle).
PRESETS.update({f"{name}-gpu": large_batch(recipe) for name, recipe in list(PRESETS.items())})


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The ``train_agent.py`` command line; ``prog`` defaults to the name it was started by (``ram-train``, ...)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Train a hard-attention agent (the RAM agent or a stable-baselines3 algorithm) on a glimpse task.",
        epilog=DATA_HELP,
    )
    hints = get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        kind = hints[f.name]
        kwargs: dict[str, Any] = {"help": f.metadata["help"], "dest": f.name, "default": argparse.SUPPRESS}
        # Each default is printed once: by the help text itself where it explains it, else here (None says nothing).
        if f.default is not None and "default" not in kwargs["help"]:
            kwargs["help"] += f" (default: {f.default})"
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            base = next((t for t in (int, float, str) if t in getattr(kind, "__args__", (kind,))), str)
            kwargs["type"] = base
            if "choices" in f.metadata:
                kwargs["choices"] = f.metadata["choices"]
            else:
                kwargs["metavar"] = f.name.upper()
        parser.add_argument(f"--{_flag(f.name)}", **kwargs)
    parser.add_argument("--list-presets", action="store_true", help="print the presets and exit")
    return parser


def resolve_config(explicit: dict[str, Any]) -> TrainConfig:
    """Defaults, then the preset named in ``explicit`` (if any), then ``explicit`` itself."""
    values: dict[str, Any] = {}
    preset = explicit.get("preset")
    if preset is not None:
        if preset not in PRESETS:
            raise UserError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
        values.update(PRESETS[preset])
    values.update(explicit)
    try:
        config = TrainConfig(**values)
    except TypeError as err:
        raise UserError(str(err)) from err
    config.validate()
    return config


#: The settings that make a RAM recipe (what a preset may fix); the others (seed, output, threads, device, time
#: limit, how often to validate or checkpoint) say how one run was carried out, not what it trains.
RECIPE_FIELDS = (
    "algo", "env", "glimpses", "env_args", "epochs", "epoch_images", "batch_size", "mc_samples", "learning_rate",
    "lr_decay", "lr_decay_steps", "warmup_updates", "weight_decay", "max_grad_norm", "precision", "core",
    "hidden_size", "glimpse_hidden", "glimpse_out", "location_std", "tanh_mean", "conv_glimpse",
    "reinforce_into_core", "location_policy",
)  # fmt: skip


def recipe_of(settings: dict[str, Any]) -> dict[str, Any]:
    """The :data:`RECIPE_FIELDS` of a saved config or of a preset's entry in :data:`PRESETS`; a setting it does not
    give takes the default (in a saved config, one that predates its flag)."""
    defaults = dataclasses.asdict(TrainConfig())
    return {name: settings.get(name, defaults[name]) for name in RECIPE_FIELDS}


def preset_of(config: dict[str, Any]) -> str | None:
    """The preset a run's saved ``config`` (``TrainConfig`` as a dict) is an instance of.

    Its recorded ``preset`` when the run kept that preset's recipe (:func:`recipe_of`); else the first preset whose
    recipe it has (a run of ``--preset cluttered60-6g-gpu --core lstm`` is ``cluttered60-6g-lstm-gpu``); else the
    recorded name (``None`` for a run without a preset).
    """
    recorded = config.get("preset")
    if recorded is None:
        return None
    trained = recipe_of(config)
    if recorded not in PRESETS or recipe_of(PRESETS[recorded]) == trained:
        return recorded
    return next((name for name in PRESETS if recipe_of(PRESETS[name]) == trained), recorded)


def parse_command_line(argv: list[str] | None = None) -> dict[str, Any] | None:
    """The flags given on the command line, by field name (``None`` after ``--list-presets``).

    Only the flags the user typed are in the dict: :func:`resolve_config` fills in the preset and the defaults, and
    ``agents.runs.resume_config`` the resumed run's saved settings.
    """
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    if args.pop("list_presets", False):
        width = max(map(len, PRESETS))
        for name, values in PRESETS.items():
            print(f"{name:{width}s}  " + " ".join(f"{k}={v}" for k, v in values.items()))
        return None
    return args
