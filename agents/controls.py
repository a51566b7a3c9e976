"""The paper's control models: classifiers that see the whole canvas, trained on the environments' own canvases.

Mnih et al. 2014 compare the RAM agent with networks that look at the whole image at once. This module trains two
of them with cross-entropy and Adam:

* ``fc``: a fully connected network, ``Flatten -> [Linear(256) -> ReLU] x 2 -> Linear(classes)`` (the paper's
  "FC, 2 layers (256 hiddens each)");
* ``conv``: the paper's "convolutional, 2 layers" control as its Section 4.1 describes it: one convolutional layer
  of 8 filters of 10 x 10 with stride 5 and ReLU, a fully connected layer of 256 ReLUs, and the class layer.

(The third control, the RAM agent with random glimpse locations, is ``train_agent.py --location-policy random``.)

**Same data as the agent.** :class:`CanvasBatches` composes whole canvases with the environment's own code
(:func:`ram_env.canvas.sample_layout_torch` and :func:`ram_env.canvas.compose_torch`, drawn in the order
:class:`ram_env.vector.GlimpseVectorEnv` draws them): training canvases are generated afresh for every batch
(translated, cluttered), and validation and test use the split's fixed canvases
(:attr:`ram_env.task.Task.fixed_layout`), the very ones the agent is scored on.

**Training.** Every update's batch is seeded from ``(seed, update)`` (:func:`ram_env.seeding.stream_seed`), Adam with
the RAM trainer's step decay; after every epoch the validation error is measured and the best epoch's weights are
kept. A run stops after ``minutes`` of wall time (or ``max_epochs``) and writes one checkpoint in the project's format
(``algo`` ``"fc"`` or ``"conv"``) holding the best epoch's weights, so ``evaluate.py`` scores it like an agent.

**Evaluation.** A control is deterministic: the sampled, mean-location and Monte Carlo errors of
:func:`evaluate_control_checkpoint` are one and the same figure (reported with ``"deterministic": true``).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from agents.checkpoint import save_checkpoint
from agents.config import TrainConfig, UserError
from agents.evaluation import EvaluationResult, make_report
from agents.threads import torch_threads
from agents.trainer import lr_factor
from ram_env.canvas import Layout, compose_torch, sample_layout_torch
from ram_env.seeding import stream_seed
from ram_env.task import Task, TaskConfig

#: The algorithm names of control checkpoints.
CONTROL_ALGOS = ("fc", "conv")

#: Short task names of ``benchmarks/train_controls.py --task`` and their environment ids.
TASKS: dict[str, str] = {
    "mnist": "RAM/MNIST-v0",
    "translated60": "RAM/TranslatedMNIST60-v0",
    "cluttered60": "RAM/ClutteredMNIST60-v0",
    "cluttered100": "RAM/ClutteredMNIST100-v0",
}


def _f(default: Any, help: str, **kw: Any) -> Any:  # noqa: A002 - "help" reads best in the table below
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class ControlConfig:
    """One training run of a control model (written into its checkpoint as ``config``)."""

    env: str = _f("RAM/MNIST-v0", "registered environment id whose canvases are classified")
    model: str = _f("fc", "fc (two hidden layers) or conv (one conv layer + one hidden layer)", choices=CONTROL_ALGOS)
    seed: int = _f(1, "seed of the run (weights, training batches)")
    device: str = _f("cpu", "cpu or cuda", choices=("cpu", "cuda"))
    output: str | None = _f(None, "checkpoint file to write (default: checkpoints/<task>-<model>.pt)")
    minutes: float = _f(5.0, "wall-time budget in minutes (training + per-epoch validation)")
    max_epochs: int = _f(1000, "stop after this many epochs if the budget lasts that long")
    threads: int = _f(1, "torch CPU threads")
    env_args: str | None = _f(None, "more environment arguments as key=value,key=value")
    # Optimisation (as the RAM trainer: Adam 1e-3 decayed x0.97 every 1000 updates)
    batch_size: int = _f(128, "images per update")
    learning_rate: float = _f(1e-3, "Adam learning rate")
    lr_decay: float = _f(0.97, "learning rate factor applied every --lr-decay-steps updates")
    lr_decay_steps: int = _f(1000, "updates between learning-rate decays")
    epoch_images: int | None = _f(None, "images per epoch (default: the whole training split)")
    # Architecture
    fc_hidden: int = _f(256, "units of each hidden layer of the fc control")
    fc_layers: int = _f(2, "hidden layers of the fc control")
    conv_filters: int = _f(8, "filters of the conv control's convolutional layer")
    conv_kernel: int = _f(10, "side of the conv control's filters")
    conv_stride: int = _f(5, "stride of the conv control's filters")
    conv_hidden: int = _f(256, "units of the conv control's hidden layer")

    def validate(self) -> None:
        if self.model not in CONTROL_ALGOS:
            raise UserError(f"--model must be one of {', '.join(CONTROL_ALGOS)}, got {self.model!r}")
        if self.seed < 0:
            raise UserError(f"--seed must be >= 0, got {self.seed}")
        if not self.minutes > 0:
            raise UserError(f"--minutes must be > 0, got {self.minutes}")
        for name in ("max_epochs", "threads", "batch_size", "lr_decay_steps", "fc_hidden", "conv_filters"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.lr_decay <= 1:
            raise UserError(f"--lr-decay must lie in (0, 1], got {self.lr_decay}")


# --------------------------------------------------------------------------------------------------------- models


class FCClassifier(nn.Module):
    """``(B, C, H, W)`` canvases in [0, 1] -> ``(B, n_classes)`` logits through ``layers`` hidden ReLU layers."""

    def __init__(self, input_shape: tuple[int, int, int], n_classes: int, hidden: int = 256, layers: int = 2):
        super().__init__()
        size = int(np.prod(input_shape))
        blocks: list[nn.Module] = [nn.Flatten()]
        for _ in range(layers):
            blocks += [nn.Linear(size, hidden), nn.ReLU()]
            size = hidden
        blocks.append(nn.Linear(size, n_classes))
        self.net = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConvClassifier(nn.Module):
    """``(B, C, H, W)`` -> logits: ``Conv(filters, kernel, stride) -> ReLU -> Linear(hidden) -> ReLU -> Linear``.

    With the defaults (8 filters of 10 x 10, stride 5) a 28 x 28 image gives 8 maps of 4 x 4 and a 60 x 60 canvas
    8 maps of 11 x 11 (no padding).
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        n_classes: int,
        filters: int = 8,
        kernel: int = 10,
        stride: int = 5,
        hidden: int = 256,
    ):
        super().__init__()
        c, h, w = input_shape
        if kernel > min(h, w):
            raise ValueError(f"conv kernel {kernel} is larger than the {h} x {w} canvas")
        out_h, out_w = (h - kernel) // stride + 1, (w - kernel) // stride + 1
        self.net = nn.Sequential(
            nn.Conv2d(c, filters, kernel, stride=stride),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(filters * out_h * out_w, hidden),
            nn.ReLU(),
            nn.Linear(hidden, n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def model_args_for(config: ControlConfig, input_shape: tuple[int, int, int], n_classes: int) -> dict[str, Any]:
    """The checkpoint's ``model_args``: everything :func:`build_control` needs."""
    if config.model == "fc":
        arch = {"hidden": config.fc_hidden, "layers": config.fc_layers}
    else:
        arch = {
            "filters": config.conv_filters,
            "kernel": config.conv_kernel,
            "stride": config.conv_stride,
            "hidden": config.conv_hidden,
        }
    return {"kind": config.model, "input_shape": list(input_shape), "n_classes": int(n_classes), **arch}


def build_control(model_args: dict[str, Any]) -> nn.Module:
    """Rebuild a control from its ``model_args``."""
    args = dict(model_args)
    kind = args.pop("kind")
    shape = tuple(args.pop("input_shape"))
    n_classes = args.pop("n_classes")
    if kind == "fc":
        return FCClassifier(shape, n_classes, **args)
    if kind == "conv":
        return ConvClassifier(shape, n_classes, **args)
    raise UserError(f"unknown control model {kind!r}; known: {', '.join(CONTROL_ALGOS)}")


# ------------------------------------------------------------------------------------------------------- canvases


class CanvasBatches:
    """Whole canvases of one split of a task, batched on ``device``, composed exactly as the vector env does.

    :param env_kwargs: :class:`~ram_env.task.TaskConfig` fields (the environment's arguments).
    :param split: train, validation or test.
    """

    def __init__(self, env_kwargs: dict[str, Any], split: str, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.task = Task(TaskConfig.from_kwargs(**{**env_kwargs, "split": split}))
        self.images = torch.tensor(np.asarray(self.task.data.images), device=self.device)  # (N, C, h, w) uint8
        self.labels = torch.tensor(np.asarray(self.task.data.labels), device=self.device)  # (N,) int64
        self._fixed = self.task.fixed_layout.to_torch(self.device) if split != "train" else None

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def canvas_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of a canvas."""
        return self.task.channels, self.task.canvas_h, self.task.canvas_w

    def _compose(self, layout: Layout) -> tuple[torch.Tensor, torch.Tensor]:
        canvas = compose_torch(self.images, layout, self.task.config.canvas)  # (B, C, H, W) uint8
        return canvas.to(torch.float32) / 255.0, self.labels[layout.index]

    def sample(self, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """A fresh training batch: ``(B, C, H, W)`` float canvases in [0, 1] and ``(B,)`` labels.

        Draws the images uniformly with replacement, then their layouts, from ``generator`` in the order
        :class:`~ram_env.vector.GlimpseVectorEnv` does: after ``generator.manual_seed(s)`` these are the canvases of
        ``GlimpseVectorEnv(batch, **env_kwargs).reset(seed=s)``.
        """
        n = len(self)
        index = torch.randint(0, n, (batch,), generator=generator, device=self.device)
        hw = (int(self.images.shape[2]), int(self.images.shape[3]))
        return self._compose(sample_layout_torch(generator, index, n, hw, self.task.config.canvas))

    def ordered(self, batch: int = 1000) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Every canvas of a validation or test split once, in order, on its fixed layout, ``batch`` at a time."""
        if self._fixed is None:
            raise ValueError("ordered passes are over the fixed canvases of validation and test splits")
        for start in range(0, len(self), batch):
            index = torch.arange(start, min(start + batch, len(self)), device=self.device)
            yield self._compose(Layout(*(v[index] for v in self._fixed._fields())))


# ------------------------------------------------------------------------------------------------------ evaluation


@torch.no_grad()
def predict_split(model: nn.Module, data: CanvasBatches, batch: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, predictions)``, each ``(N,)``, of ``model`` on every canvas of a validation or test split."""
    was_training = model.training
    model.eval()
    labels, preds = [], []
    try:
        for x, y in data.ordered(batch):
            labels.append(y)
            preds.append(model(x).argmax(dim=1))
    finally:
        model.train(was_training)
    return torch.cat(labels).cpu().numpy(), torch.cat(preds).cpu().numpy()


def evaluate_control(model: nn.Module, env_kwargs: dict[str, Any], split: str, device="cpu") -> EvaluationResult:
    """Score a control on every canvas of ``split``; the three errors of the result are the same figure."""
    data = CanvasBatches(env_kwargs, split, device)
    labels, preds = predict_split(model, data)
    error = float(100.0 * (preds != labels).mean())
    return EvaluationResult(
        images=len(labels),
        mc_samples=1,
        error_sampled=error,
        error_mean_location=error,
        error_monte_carlo=error,
        labels=labels,
        predictions=preds,
        predictions_mean_location=preds,
        locations=np.zeros((len(labels), 0, 2), dtype=np.float32),  # no glimpses
    )


def evaluate_control_checkpoint(
    payload: dict, *, split: str = "test", device: str | torch.device = "cpu"
) -> tuple[EvaluationResult, dict]:
    """:func:`agents.policies.evaluate_checkpoint` for ``fc`` and ``conv`` checkpoints.

    The control is deterministic, so the Monte Carlo samples and the seed change nothing: the report carries
    ``"deterministic": true`` and ``mc_samples`` 1, and its three errors are equal.
    """
    model = build_control(payload["model_args"])
    model.load_state_dict(payload["model"])
    model.to(device)
    result = evaluate_control(model, payload["env_kwargs"], split, device)
    report = make_report(payload, result, split, payload["model_args"]["n_classes"])
    report["deterministic"] = True
    return result, report


# --------------------------------------------------------------------------------------------------------- training


def env_kwargs_of(config: ControlConfig) -> dict[str, Any]:
    """The environment arguments of the run: the registered defaults of ``config.env`` with ``env_args``."""
    from agents.runs import env_kwargs_for

    return env_kwargs_for(TrainConfig(env=config.env, env_args=config.env_args))


def default_output(config: ControlConfig) -> Path:
    task = next((name for name, env_id in TASKS.items() if env_id == config.env), config.env.replace("/", "-"))
    return Path("checkpoints") / f"{task}-{config.model}.pt"


def train_control(config: ControlConfig, *, log: bool = True) -> dict[str, Any]:
    """Train a control within ``config.minutes``, keep the best validation epoch, write its checkpoint.

    :return: the checkpoint's payload (``model`` holds the best epoch's weights; ``history`` every epoch).
    """
    from agents.manifest import hardware_description  # provenance of the run
    from agents.runs import git_commit

    config.validate()
    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but torch sees no CUDA device")
    env_kwargs = env_kwargs_of(config)
    train_data = CanvasBatches(env_kwargs, "train", device)
    val_data = CanvasBatches(env_kwargs, "validation", device)
    output = Path(config.output) if config.output else default_output(config)
    with torch_threads(config.threads):
        torch.manual_seed(config.seed)
        model_args = model_args_for(config, train_data.canvas_shape, train_data.task.n_classes)
        model = build_control(model_args).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, config))
        steps_per_epoch = math.ceil((config.epoch_images or len(train_data)) / config.batch_size)
        generator = torch.Generator(device=device)
        history: list[dict[str, Any]] = []
        best: dict[str, Any] = {"val_error": math.inf}
        step, stopped = 0, "max epochs"
        start = time.perf_counter()
        deadline = start + 60.0 * config.minutes
        for epoch in range(1, config.max_epochs + 1):
            model.train()
            for _ in range(steps_per_epoch):
                generator.manual_seed(stream_seed(config.seed, "train/env", step, 0))
                x, y = train_data.sample(config.batch_size, generator)
                loss = F.cross_entropy(model(x), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                step += 1
                if time.perf_counter() > deadline:
                    break  # the last epoch is cut short at the budget, then validated
            train_time = time.perf_counter() - start
            labels, preds = predict_split(model, val_data)
            val_error = float(100.0 * (preds != labels).mean())
            record = {
                "epoch": epoch,
                "step": step,
                "images": step * config.batch_size,
                "wall_time": round(time.perf_counter() - start, 2),
                "train_time": round(train_time, 2),
                "train_loss": float(loss.detach()),
                "val_error": val_error,
                # The keys of the RAM trainer's history (agents.figures.plot_training_curve reads these).
                "val_error_mean_location": val_error,
            }
            history.append(record)
            if val_error < best["val_error"]:
                best = {**record, "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}
            if log and (best["epoch"] == epoch or epoch % 10 == 0):
                print(
                    f"epoch {epoch}: val error {val_error:.2f}% (best {best['val_error']:.2f}% at epoch "
                    f"{best['epoch']}), {record['wall_time'] / 60:.1f} min",
                    flush=True,
                )
            if time.perf_counter() > deadline:
                stopped = "time limit"
                break
        total_time = time.perf_counter() - start
        payload = {
            "algo": config.model,
            "env_id": config.env,
            "env_kwargs": env_kwargs,
            "config": dataclasses.asdict(config),
            "model_args": model_args,
            "model": best["state"],
            "epoch": best["epoch"],
            "global_step": best["step"],
            "batch_size": config.batch_size,
            "history": history,
            "wall_time": best["wall_time"],
            "best_val": best["val_error"],
            "run": {"wall_time": round(total_time, 2), "steps": step, "epochs": len(history), "stopped": stopped},
            "provenance": {
                "git_commit": git_commit(),
                "hardware": hardware_description(device, config.threads),
            },
        }
    save_checkpoint(payload, output)
    if log:
        print(f"wrote {output}: best validation error {best['val_error']:.2f}% at epoch {best['epoch']}")
    return payload


# ---------------------------------------------------------------------------------------------------- command line


def build_parser(prog: str = "train_controls.py") -> argparse.ArgumentParser:
    """Flags for every :class:`ControlConfig` field, plus ``--task`` (a short name for ``--env``)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Train a control model of the RAM paper (fc or conv) on whole canvases of a glimpse task.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--task", choices=tuple(TASKS), help="short name of --env: " + ", ".join(TASKS))
    hints = get_type_hints(ControlConfig)
    for f in dataclasses.fields(ControlConfig):
        kind = hints[f.name]
        base = next((t for t in (int, float, str) if t in getattr(kind, "__args__", (kind,))), str)
        kwargs: dict[str, Any] = {
            "type": base,
            "dest": f.name,
            "default": argparse.SUPPRESS,
            "help": f.metadata["help"],
        }
        if "choices" in f.metadata:
            kwargs["choices"] = f.metadata["choices"]
        kwargs["help"] += f" (default: {f.default})"
        parser.add_argument(f"--{f.name.replace('_', '-')}", **kwargs)
    return parser


def parse_args(argv: list[str] | None = None) -> ControlConfig:
    args = vars(build_parser().parse_args(argv))
    task = args.pop("task", None)
    if task is not None:
        if "env" in args and args["env"] != TASKS[task]:
            raise UserError(f"--task {task} conflicts with --env {args['env']}; give one of them")
        args["env"] = TASKS[task]
    config = ControlConfig(**args)
    config.validate()
    return config
