"""The glimpse classification environment (one episode at a time, numpy)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

from ram_env.canvas import compose_numpy, sample_layout_numpy
from ram_env.render import draw_episode
from ram_env.sensor import glimpse_numpy
from ram_env.task import Task, TaskConfig


class GlimpseEnv(gym.Env):
    """
    ## Description

    Image classification as a sequential decision problem, after Mnih et al. 2014, "Recurrent Models of Visual
    Attention". The agent never sees the whole image. Each step it receives a *glimpse*: ``num_scales`` square
    patches centred on one location, the first ``glimpse_size x glimpse_size`` pixels, each next one ``scale`` times
    wider and area-averaged down to the same size. It chooses where to look next; after the last glimpse it names
    the class. Images come from a data set split, optionally translated onto a larger canvas with clutter
    (see :mod:`ram_env.canvas`).

    ## Action Space

    With the default ``action_form="dict"``, a ``Dict``:

    | key        | space                       | meaning                                                   |
    |------------|-----------------------------|-----------------------------------------------------------|
    | `location` | `Box(-1, 1, (2,), float32)` | `(x, y)` of the next glimpse; (-1, -1) is the top-left    |
    | `label`    | `Discrete(n_classes)`       | the class, read only at the last step                     |

    ``action_form="box"`` and ``"grid"`` give forms stable-baselines3 accepts (see :mod:`ram_env.actions`). A NaN,
    infinite or out-of-range location, a label outside the classes or a wrongly shaped action raises ``ValueError``.

    ## Observation Space

    A ``Dict``:

    | key        | space                                        | meaning                               |
    |------------|----------------------------------------------|---------------------------------------|
    | `glimpse`  | `Box(0, 1, (k, C, g, g), float32)`           | the patches, finest first             |
    | `location` | `Box(-1, 1, (2,), float32)`                  | where this glimpse was taken          |
    | `t`        | `Discrete(glimpses)`                         | index of this glimpse in the episode  |

    ## Rewards

    1 at the last step if the label is the true class, else 0; 0 at every other step. With ``action_form="box"`` and
    ``reward="softmax"``, the last step's reward is instead ``softmax(5 a[2:])[true class]``, the probability the
    action's class scores give the true class (a shaping for actor-critic algorithms; ``is_success`` still says
    whether the highest score named the true class).

    ## Starting State

    A random image of the split (or the next one in order, for ordered validation/test passes), on a fresh canvas,
    and the first glimpse at a uniformly random location (``initial_location="random"``) or the centre.

    ``reset(options={"index": i, "location": (x, y)})`` (either key alone, too) starts the episode on image ``i`` of
    the split and/or takes the first glimpse at ``(x, y)``, e.g. to replay an episode of the vector environment
    (whose ``info["index"]`` names the image) or to look at one image. An ordered pass does not advance on such a
    reset. The canvas is drawn as usual (fixed for validation and test, random for train).

    ## Episode End

    ``terminated`` after ``glimpses`` steps (the observation then repeats the last glimpse). There is no truncation.
    ``info`` always holds ``label`` (the true class, for supervised auxiliary losses) and ``index`` (the image's
    index in the split); the last step adds ``is_success``.

    ## Arguments

    All fields of :class:`ram_env.task.TaskConfig`, plus ``render_mode`` (``None`` or ``"rgb_array"``):

    ```python
    >>> import gymnasium as gym
    >>> env = gym.make("ram_env:RAM/MNIST-v0", glimpses=4, split="test")  # doctest: +SKIP
    ```

    ## Version History

    * v0: first version.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 2}

    def __init__(self, *, render_mode: str | None = None, **task_kwargs: Any):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"unknown render_mode {render_mode!r}; choose None or 'rgb_array'")
        self.config = TaskConfig.from_kwargs(**task_kwargs)
        self.task = Task(self.config)
        self.render_mode = render_mode
        self.observation_space = self.task.observation_space()
        self.action_space = self.task.action_space()
        self._cursor = 0  # next image of an ordered pass
        self._canvas: np.ndarray | None = None
        self._index = 0
        self._t = 0
        self._locations: list[np.ndarray] = []

    def step(self, action):
        if self._canvas is None:
            raise RuntimeError("call reset() before step()")
        if self._t >= self.config.glimpses:
            raise RuntimeError("the episode has ended; call reset()")
        location, label = self.task.action_form.decode(action)
        self._t += 1
        info = self._get_info()
        if self._t == self.config.glimpses:
            correct = int(label[0]) == self._label
            info["is_success"] = correct
            reward = float(correct)  # the paper's reward, without building tensors (about 1 % of an episode here)
            if self.config.reward != "correct":
                reward = float(self.task.final_reward(action, torch.tensor([correct]), torch.tensor([self._label]))[0])
            return self._get_obs(), reward, True, False, info
        self._locations.append(location[0].numpy().astype(np.float32))
        return self._get_obs(), 0.0, False, False, info

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        task = self.task
        index, first = self._reset_options(options)
        if index is not None:
            self._index = index
        elif task.config.is_ordered:
            self._index = self._cursor
            self._cursor = (self._cursor + 1) % len(task.data)
        else:
            self._index = int(self.np_random.integers(len(task.data)))
        if task.config.split == "train":
            layout = sample_layout_numpy(
                self.np_random, np.array([self._index]), len(task.data), task.image_hw, task.config.canvas
            )
            self._canvas = compose_numpy(task.data.images, layout, task.config.canvas)
        else:
            self._canvas = compose_numpy(task.data.images, task.fixed_layout, task.config.canvas, self._index)
        if first is None and task.config.initial_location == "center":
            first = np.zeros(2, dtype=np.float32)
        elif first is None:
            first = self.np_random.uniform(-1.0, 1.0, size=2).astype(np.float32)
        self._t = 0
        self._locations = [first]
        return self._get_obs(), self._get_info()

    def _reset_options(self, options: dict | None) -> tuple[int | None, np.ndarray | None]:
        """The image index and first location asked for by ``reset(options=...)`` (``None`` where not given)."""
        options = dict(options or {})
        unknown = sorted(set(options) - {"index", "location"})
        if unknown:
            raise ValueError(f"unknown reset option(s) {', '.join(unknown)}; valid: index, location")
        index = options.get("index")
        if index is not None:
            n = len(self.task.data)
            if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < n:
                raise ValueError(f"reset option index must be an integer in [0, {n}), got {index!r}")
            index = int(index)
        first = options.get("location")
        if first is not None:
            first = np.array(first, dtype=np.float32)  # a copy: the episode keeps it
            if first.shape != (2,) or not np.isfinite(first).all() or (np.abs(first) > 1).any():
                raise ValueError(f"reset option location must be a finite (x, y) in [-1, 1]^2, got {first.tolist()}")
        return index, first

    def render(self):
        if self.render_mode != "rgb_array" or self._canvas is None:
            return None
        return draw_episode(self._canvas, np.stack(self._locations), self.config.sensor)

    def close(self):
        self._canvas = None

    @property
    def _label(self) -> int:
        return int(self.task.data.labels[self._index])

    @property
    def canvas(self) -> np.ndarray | None:
        """The current episode's canvas ``(C, H, W)`` uint8 (for visualisation)."""
        return self._canvas

    def _get_obs(self) -> dict[str, Any]:
        assert self._canvas is not None, "reset() composes the canvas"
        sensor = self.config.sensor
        location = self._locations[-1]
        glimpse = glimpse_numpy(
            self._canvas,
            location,
            glimpse_size=sensor.glimpse_size,
            num_scales=sensor.num_scales,
            scale=sensor.scale,
        )
        return {"glimpse": glimpse, "location": location.copy(), "t": np.int64(min(self._t, self.config.glimpses - 1))}

    def _get_info(self) -> dict[str, Any]:
        return {"label": self._label, "index": self._index}
