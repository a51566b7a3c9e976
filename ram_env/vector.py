"""A batched, device-resident vector environment: every episode of the batch advances in one set of tensor ops.

:class:`GlimpseVectorEnv` is the ``vector_entry_point`` of every registered id::

    envs = gym.make_vec("ram_env:RAM/MNIST-v0", num_envs=1024, vectorization_mode="vector_entry_point", device="cpu")

It runs the same task as :class:`ram_env.envs.GlimpseEnv` (same :class:`~ram_env.task.TaskConfig` arguments, same
spaces, same pixels: the canvas composition and the glimpse sensor have numpy and torch twins that agree), but
holds the data set once on ``device`` and keeps all episode state there; observations come back as torch tensors on
that device and actions may be tensors or numpy arrays.

**Autoreset.** Every episode has exactly ``glimpses`` steps and all environments start together, so they always end
on the same step. The env uses gymnasium's *same-step* autoreset (``metadata["autoreset_mode"] ==
AutoresetMode.SAME_STEP``): the step that ends the episodes returns the reward and ``terminated=True`` together with
the *first observation of the next episodes*; the finished episodes' last observation is in ``info["final_obs"]`` and
their info (``label``, ``index``, ``is_success``) in ``info["final_info"]``. No step is spent on resets.

**Info.** ``info["label"]`` and ``info["index"]`` always describe the episodes of the returned observation.

**Monte Carlo samples.** With ``mc_samples=M``, environments ``i*M .. i*M + M-1`` show the same image on the same
canvas (``num_envs`` must be a multiple of ``M``); they differ in their initial locations and in the agent's actions.

**Ordered passes.** For validation and test (or ``ordered=True``), ``reset()`` starts a pass at image 0 and each
autoreset takes the next ``num_envs / M`` images of the split in order, wrapping around at the end;
``info["index"]`` tells which image each environment holds, so an evaluation that runs
``ceil(n / (num_envs / M))`` batches scores every image and can drop the wrapped repeats.

**Seeding.** ``reset(seed=s)`` seeds one ``torch.Generator`` on the device, the only source of randomness: the same
seed on the same device gives the same images, canvases and initial locations. (Streams differ between CPU and CUDA.)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from ram_env.canvas import Layout, compose_into, sample_layout_torch
from ram_env.sensor import empty_table, glimpse_from_integral, integral_image, integrate_
from ram_env.task import Task, TaskConfig

# (id of the split's image array, device) -> (that array, images, labels). The entry keeps the array alive, so
# its id cannot be reused by another data set's array while the entry exists.
_DEVICE_DATA: dict[tuple[int, str], tuple[np.ndarray, torch.Tensor, torch.Tensor]] = {}


def _data_on(task: Task, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The split's images (uint8) and labels (int64) on ``device``, one copy shared by all envs on it."""
    key = (id(task.data.images), str(device))
    entry = _DEVICE_DATA.get(key)
    if entry is None or entry[0] is not task.data.images:
        images = torch.tensor(np.asarray(task.data.images), device=device)  # one copy
        labels = torch.tensor(np.asarray(task.data.labels), device=device)
        entry = _DEVICE_DATA[key] = (task.data.images, images, labels)
    return entry[1], entry[2]


class GlimpseVectorEnv(VectorEnv):
    """``num_envs`` glimpse episodes advanced together as batched torch operations on ``device``.

    :param num_envs: number of parallel episodes.
    :param device: torch device holding the data and all state (``"cpu"``, ``"cuda"``, ``"cuda:1"`` ...).
    :param mc_samples: show each image to this many consecutive environments (Monte Carlo samples).
    :param autoreset: ``True`` (default): same-step autoreset. ``False``: ``AutoresetMode.DISABLED``; the step that
        ends the episodes returns their last observation and ``is_success`` in ``info``, and the caller resets. A
        trainer that reseeds every batch (``reset(seed=f(seed, step))``, exactly resumable at any step) uses this.
    :param validate_actions: ``True`` (default): ``step`` checks every action (finite, in range) and raises a
        ``ValueError`` naming the first bad one, at the cost of one device sync per step. ``False`` clamps
        locations without checking: for callers whose actions are valid by construction, such as the trainer,
        whose update then runs without a host sync (and can be captured as one CUDA graph).
    :param task_kwargs: the fields of :class:`ram_env.task.TaskConfig`.
    """

    metadata = {"render_modes": [], "autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(
        self,
        num_envs: int = 1,
        *,
        device: str | torch.device = "cpu",
        mc_samples: int = 1,
        autoreset: bool = True,
        validate_actions: bool = True,
        render_mode: str | None = None,
        **task_kwargs: Any,
    ):
        if render_mode is not None:
            raise ValueError("the vector env does not render; render a single env (gym.make) instead")
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
        if isinstance(mc_samples, bool) or not isinstance(mc_samples, (int, np.integer)) or mc_samples < 1:
            raise ValueError(f"mc_samples must be a positive integer, got {mc_samples!r}")
        if num_envs % mc_samples:
            raise ValueError(f"num_envs ({num_envs}) must be a multiple of mc_samples ({mc_samples})")
        self.config = TaskConfig.from_kwargs(**task_kwargs)
        self.task = Task(self.config)
        self.num_envs = int(num_envs)
        self.mc_samples = int(mc_samples)
        self.autoreset = bool(autoreset)
        self.validate_actions = bool(validate_actions)
        if not self.autoreset:
            self.metadata = {**self.metadata, "autoreset_mode": AutoresetMode.DISABLED}
        self.device = torch.device(device)
        self.render_mode = None
        self.single_observation_space: spaces.Dict = self.task.observation_space()
        self.single_action_space = self.task.action_space()
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)

        self.images, self.labels = _data_on(self.task, self.device)  # (N_data, C, h, w), (N_data,); shared
        self._fixed: Layout[torch.Tensor] | None = None
        if self.config.split != "train":
            self._fixed = self.task.fixed_layout.to_torch(self.device)
        self._generator = torch.Generator(device=self.device)
        self._generator.manual_seed(int(np.random.SeedSequence().generate_state(1)[0]))
        self._cursor = 0
        self._t = 0
        self._table_row = torch.arange(self.num_envs, device=self.device) // self.mc_samples  # env -> its image
        self._table: torch.Tensor | None = None  # (N / M, C, H + 1, W + 1) summed-area tables of the canvases
        self.location = torch.zeros(self.num_envs, 2, device=self.device)  # (N, 2) float32
        self.index = torch.zeros(self.num_envs, dtype=torch.long, device=self.device)
        self._last_obs: dict[str, torch.Tensor] = {}  # the observation the last reset() or step() returned

    @property
    def canvas(self) -> torch.Tensor | None:
        """``(N / M, C, H, W)`` uint8: the current episodes' canvases, one per distinct image (``None`` before the
        first reset). The env keeps only their summed-area tables; the pixels are recovered from them (exactly) on
        each access."""
        if self._table is None:
            return None
        t = self._table
        pixels = t[:, :, 1:, 1:] - t[:, :, :-1, 1:] - t[:, :, 1:, :-1] + t[:, :, :-1, :-1]  # (N / M, C, H, W)
        return pixels.to(torch.uint8)

    @property
    def distinct_images(self) -> int:
        """Images per batch of episodes (``num_envs / mc_samples``)."""
        return self.num_envs // self.mc_samples

    @property
    def generator(self) -> torch.Generator:
        """The env's one source of randomness (images, canvases, initial locations), on ``device``."""
        return self._generator

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._generator.manual_seed(int(seed))
        self._cursor = 0
        self._new_episodes()
        return self._observe(), self._get_info()

    def step(self, actions):
        if self._table is None:
            raise RuntimeError("call reset() before step()")
        if self._t >= self.config.glimpses:
            raise RuntimeError("the episodes have ended and autoreset is off; call reset()")
        location, label = self.task.action_form.decode(
            actions, batch=self.num_envs, device=self.device, check=self.validate_actions
        )
        self._t += 1
        n = self.num_envs
        truncated = torch.zeros(n, dtype=torch.bool, device=self.device)
        if self._t < self.config.glimpses:
            self.location = location.to(torch.float32)
            reward = torch.zeros(n, dtype=torch.float32, device=self.device)
            terminated = torch.zeros(n, dtype=torch.bool, device=self.device)
            return self._observe(), reward, terminated, truncated, self._get_info()
        true_label = self.labels[self.index]
        correct = label == true_label
        reward = self.task.final_reward(actions, correct, true_label, batch=n, device=self.device)
        done = torch.ones(n, dtype=torch.bool, device=self.device)
        # The last step moves no glimpse (its location is ignored), so the episodes' last observation is the one the
        # previous step returned: handed back again instead of read a second time (one sensor read in seven saved
        # at 6 glimpses).
        final_obs = dict(self._last_obs)
        if not self.autoreset:
            return (
                final_obs,
                reward,
                done,
                truncated,
                {**self._get_info(), "is_success": correct},
            )
        final_info = {**self._get_info(), "is_success": correct}
        self._new_episodes()
        info = self._get_info()
        info.update(final_obs=final_obs, final_info=final_info, _final_obs=done, _final_info=done)
        return self._observe(), reward, done, truncated, info

    def close_extras(self, **kwargs: Any) -> None:
        self._table = None
        self._last_obs = {}

    def _new_episodes(self) -> None:
        m, k = self.mc_samples, self.distinct_images
        n_data = self.images.shape[0]
        if self.config.is_ordered:
            index = (self._cursor + torch.arange(k, device=self.device)) % n_data
            self._cursor = (self._cursor + k) % n_data
        else:
            index = torch.randint(0, n_data, (k,), generator=self._generator, device=self.device)
        if self._fixed is None:
            layout = sample_layout_torch(self._generator, index, n_data, self.task.image_hw, self.config.canvas)
        else:
            layout = Layout(*(v[index] for v in self._fixed._fields()))
        # The summed-area tables, built once and read by every glimpse of the episode; the previous episodes' tables
        # are overwritten in place.
        if self.config.canvas.is_identity:
            self._table = integral_image(self.images.index_select(0, index), out=self._table)
        else:
            self._compose_tables(layout)
        self.index = index.repeat_interleave(m) if m > 1 else index
        if self.config.initial_location == "center":
            self.location = torch.zeros(self.num_envs, 2, device=self.device)
        else:
            u = torch.rand(self.num_envs, 2, generator=self._generator, device=self.device)
            self.location = u * 2.0 - 1.0
        self._t = 0

    def _compose_tables(self, layout: Layout[torch.Tensor]) -> None:
        """Compose the canvases straight into the interiors of their tables (int32 sums, clipped at 255), then sum
        the tables in place: no separate canvas is made, clipped, widened and copied (README "Training
        throughput")."""
        height, width = self.task.canvas_h, self.task.canvas_w
        canvases = (self.distinct_images, self.images.shape[1], height, width)
        table = empty_table(canvases, self.images.dtype, self.device, out=self._table)
        table.zero_()
        compose_into(
            table.view(-1),
            self.images,
            layout,
            self.config.canvas,
            plane_stride=(height + 1) * (width + 1),
            row_stride=width + 1,
            offset=width + 2,  # pixel (0, 0) is table entry (1, 1)
        )
        table.clamp_(max=255)  # the clip of the summed pieces (the zero first row and column stay zero)
        self._table = integrate_(table)

    def _observe(self) -> dict[str, torch.Tensor]:
        """A new observation (a sensor read at the current locations), remembered for the episodes' last step."""
        self._last_obs = self._get_obs()
        return dict(self._last_obs)

    def _get_obs(self) -> dict[str, torch.Tensor]:
        assert self._table is not None, "reset() builds the summed-area tables"
        sensor = self.config.sensor
        glimpse = glimpse_from_integral(
            self._table, self.location, sensor, pixel_scale=1.0 / 255.0, table_row=self._table_row
        )  # (N, k, C, g, g)
        t = torch.full((self.num_envs,), min(self._t, self.config.glimpses - 1), device=self.device)
        return {"glimpse": glimpse, "location": self.location.clone(), "t": t}

    def _get_info(self) -> dict[str, torch.Tensor]:
        return {"label": self.labels[self.index], "index": self.index}
