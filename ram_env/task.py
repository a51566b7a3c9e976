"""The task shared by the single and the vector environment: data, canvas, sensor, episode length, spaces.

:class:`TaskConfig` is the one list of environment parameters; ``gym.make(id, **overrides)`` and
``gym.make_vec(id, ...)`` both pass their keyword arguments here, so the two environments cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from gymnasium import spaces

from ram_env.actions import ActionForm, softmax_reward
from ram_env.canvas import CanvasSpec, Layout, fixed_layout
from ram_env.datasets import SPLITS, ImageDataset, load_dataset
from ram_env.sensor import SensorSpec

INITIAL_LOCATIONS = ("random", "center")
REWARDS = ("correct", "softmax")
#: a largest patch wider than this many canvas sides draws a warning (see :meth:`TaskConfig.check_glimpse_fits`).
MAX_PATCH_TO_CANVAS = 4
_SPLIT_STREAM = {"train": 0, "validation": 1, "test": 2}


@dataclass(frozen=True)
class TaskConfig:
    """Parameters of a glimpse classification task (the keyword arguments of both environments)."""

    dataset: str = "mnist"
    """data set name: mnist, omniglot, cifar10, tiny, or idx:<directory> (see :mod:`ram_env.datasets`)"""
    split: str = "train"
    """train, validation or test"""
    glimpses: int = 6
    """glimpses per episode; the episode has this many steps and the label is read at the last"""
    glimpse_size: int = 8
    """side g of each patch after resizing"""
    num_scales: int = 1
    """patches per glimpse (k)"""
    scale: int = 2
    """each patch is this many times wider than the previous (s)"""
    canvas_size: int | None = None
    """side of the translated/cluttered canvas; None shows the images as they are"""
    clutter_pieces: int = 0
    """clutter pieces per canvas"""
    clutter_size: int = 8
    """side of each clutter piece"""
    initial_location: str = "random"
    """first glimpse location: 'random' (uniform in [-1, 1]^2) or 'center'"""
    ordered: bool | None = None
    """visit every image of the split once, in order (default: True for validation and test, False for train)"""
    action_form: str = "dict"
    """'dict' (native), 'box' or 'grid' (stable-baselines3 forms, see ram_env.actions)"""
    grid_size: int = 9
    """cells per axis of the 'grid' action form"""
    reward: str = "correct"
    """'correct' (the paper's: 1 if the named class is the true one, else 0) or 'softmax' (box action form only: the
    probability softmax(5 x class scores) gives the true class, a reward that changes smoothly with the action, for
    actor-critic algorithms that learn from the critic's gradient with respect to the action, such as SAC and TD3)"""
    layout_seed: int = 0
    """seed of the fixed validation and test canvases (translation and clutter)"""
    data_dir: str | None = None
    """where the data files are (default: $RAM_DATA_DIR, then the user cache)"""
    download: bool = True
    """download missing data (MNIST, CIFAR-10) into the user cache"""

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"unknown split {self.split!r}; choose one of {', '.join(SPLITS)}")
        if isinstance(self.glimpses, bool) or not isinstance(self.glimpses, (int, np.integer)) or self.glimpses < 1:
            raise ValueError(f"glimpses must be a positive integer, got {self.glimpses!r}")
        if self.initial_location not in INITIAL_LOCATIONS:
            raise ValueError(
                f"unknown initial_location {self.initial_location!r}; choose one of {', '.join(INITIAL_LOCATIONS)}"
            )
        if self.reward not in REWARDS:
            raise ValueError(f"unknown reward {self.reward!r}; choose one of {', '.join(REWARDS)}")
        if self.reward == "softmax" and self.action_form != "box":
            raise ValueError(
                f"reward='softmax' reads the class scores of the 'box' action form; with action_form="
                f"{self.action_form!r} use reward='correct', or action_form='box'"
            )
        if self.canvas_size is not None:  # else the canvas is the image, checked by Task once the data is loaded
            self.check_glimpse_fits(self.canvas_size, self.canvas_size)

    def check_glimpse_fits(self, canvas_h: int, canvas_w: int) -> None:
        """Warn when the glimpse is larger than the canvas, or its largest patch more than
        :data:`MAX_PATCH_TO_CANVAS` times the canvas side: legal, but mostly zero padding, and usually a mistake."""
        try:
            sensor = self.sensor
        except (TypeError, ValueError):
            return  # a bad geometry is reported where the sensor is built
        side = min(canvas_h, canvas_w)
        if self.glimpse_size > side:
            warnings.warn(
                f"glimpse_size {self.glimpse_size} is larger than the {canvas_h} x {canvas_w} canvas: every patch "
                "covers the whole image and the location hardly matters; use a glimpse_size below the canvas side",
                UserWarning,
                stacklevel=3,
            )
        elif sensor.largest_patch > MAX_PATCH_TO_CANVAS * side:
            warnings.warn(
                f"the largest patch of the glimpse ({self.glimpse_size} x {self.scale}^{self.num_scales - 1} = "
                f"{sensor.largest_patch} pixels) is more than {MAX_PATCH_TO_CANVAS}x the {canvas_h} x {canvas_w} "
                "canvas: it is mostly zero padding; use fewer num_scales or a smaller scale",
                UserWarning,
                stacklevel=3,
            )

    @classmethod
    def from_kwargs(cls, **kwargs) -> TaskConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(kwargs) - names)
        if unknown:
            raise TypeError(f"unknown environment argument(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
        return cls(**kwargs)

    @property
    def is_ordered(self) -> bool:
        return self.split != "train" if self.ordered is None else bool(self.ordered)

    @property
    def sensor(self) -> SensorSpec:
        return SensorSpec(self.glimpse_size, self.num_scales, self.scale)

    @property
    def canvas(self) -> CanvasSpec:
        return CanvasSpec(self.canvas_size, self.clutter_pieces, self.clutter_size)


class Task:
    """A :class:`TaskConfig` resolved against its data: loads the split and builds the spaces."""

    def __init__(self, config: TaskConfig):
        self.config = config
        self.data: ImageDataset = load_dataset(
            config.dataset, config.split, data_dir=config.data_dir, download=config.download
        )
        if len(self.data) == 0:
            raise ValueError(f"the {config.split} split of {config.dataset!r} is empty")
        self.channels, self.image_h, self.image_w = self.data.images.shape[1:]
        config.canvas.validate(self.image_h, self.image_w)
        self.canvas_h, self.canvas_w = config.canvas.side(self.image_h, self.image_w)
        if config.canvas_size is None:
            config.check_glimpse_fits(self.canvas_h, self.canvas_w)
        self.action_form = ActionForm(config.action_form, self.data.n_classes, config.grid_size)

    @property
    def n_classes(self) -> int:
        return self.data.n_classes

    @property
    def image_hw(self) -> tuple[int, int]:
        return self.image_h, self.image_w

    @cached_property
    def fixed_layout(self) -> Layout:
        """Canvas layout of every image of a validation or test split, fixed by ``layout_seed``."""
        seed = [self.config.layout_seed, _SPLIT_STREAM[self.config.split]]
        return fixed_layout(len(self.data), self.image_hw, self.config.canvas, seed)

    def observation_space(self) -> spaces.Dict:
        c = self.config
        return spaces.Dict(
            {
                "glimpse": spaces.Box(0.0, 1.0, shape=c.sensor.shape(self.channels), dtype=np.float32),
                "location": spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32),
                "t": spaces.Discrete(c.glimpses),
            }
        )

    def action_space(self) -> spaces.Space:
        return self.action_form.space()

    def final_reward(
        self, action, correct: torch.Tensor, label: torch.Tensor, batch: int | None = None, device="cpu"
    ) -> torch.Tensor:
        """The reward of the last step, float32 ``(B,)``, for the (checked) ``action`` of ``batch`` episodes (one if
        ``None``): ``correct`` (bool, the named class is ``label``, the true one) as 1 or 0, or with
        ``reward="softmax"`` the probability the action's class scores give ``label``."""
        if self.config.reward == "softmax":
            return softmax_reward(self.action_form.class_scores(action, batch, device), label)
        return correct.to(torch.float32)
