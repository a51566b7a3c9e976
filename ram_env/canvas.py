"""Translated and cluttered canvases, built as deepmind/mnist-cluttered builds them.

A canvas is ``canvas_size x canvas_size`` pixels. The example's image is placed at a uniformly random position that
keeps it whole; before it, ``clutter_pieces`` pieces are placed at uniformly random positions: each piece is a
``clutter_size x clutter_size`` crop, at a uniformly random offset, of a uniformly random *other* image of the same
split. Everything is **added** and the sum clipped to 1 (adding non-negative values and clipping once equals the
canonical clip-after-clutter-then-clip-after-digit). Pixels are ``uint8 / 255``, and since the clipped sum of uint8
values is again a uint8 value, canvases are uint8 too: the numpy and torch compositions are bit-identical.

A :class:`Layout` holds the random choices of a batch of examples; it is sampled once (from the environment's RNG for
training, from a fixed seed for the validation and test sets) and then composed. When the canvas equals the image
size and there is no clutter, the canvas is the image itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
import torch

#: the array type of a :class:`Layout`: numpy arrays or torch tensors
ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


@dataclass(frozen=True)
class CanvasSpec:
    """How an example's canvas is built.

    :param canvas_size: side of the square canvas; ``None`` uses the images as they are.
    :param clutter_pieces: number of clutter pieces added to the canvas.
    :param clutter_size: side of each clutter piece.
    """

    canvas_size: int | None = None
    clutter_pieces: int = 0
    clutter_size: int = 8

    def validate(self, image_height: int, image_width: int) -> None:
        if self.canvas_size is None:
            if self.clutter_pieces:
                raise ValueError("clutter_pieces > 0 needs a canvas_size; set canvas_size (e.g. 60)")
            return
        if self.canvas_size < max(image_height, image_width):
            raise ValueError(
                f"canvas_size={self.canvas_size} is smaller than the images ({image_height} x {image_width}); "
                "use a canvas at least as large as the images"
            )
        if self.clutter_pieces < 0:
            raise ValueError(f"clutter_pieces must be >= 0, got {self.clutter_pieces}")
        if self.clutter_pieces and not 1 <= self.clutter_size <= min(image_height, image_width, self.canvas_size):
            raise ValueError(
                f"clutter_size={self.clutter_size} must lie in [1, {min(image_height, image_width)}] "
                "(a piece is cropped from one image)"
            )

    def side(self, image_height: int, image_width: int) -> tuple[int, int]:
        if self.canvas_size is None:
            return image_height, image_width
        return self.canvas_size, self.canvas_size

    @property
    def is_identity(self) -> bool:
        return self.canvas_size is None


@dataclass
class Layout(Generic[ArrayT]):
    """Random choices for a batch of ``B`` examples (numpy arrays or torch tensors, all integer).

    ``index`` (B,) image shown; ``position`` (B, 2) its top-left ``(x, y)`` on the canvas; ``clutter_source`` (B, P)
    images the pieces are cut from; ``clutter_offset`` (B, P, 2) the crop's top-left ``(x, y)`` in the source;
    ``clutter_position`` (B, P, 2) the piece's top-left ``(x, y)`` on the canvas.
    """

    index: ArrayT
    position: ArrayT
    clutter_source: ArrayT
    clutter_offset: ArrayT
    clutter_position: ArrayT

    def to_torch(self, device: torch.device | str) -> Layout[torch.Tensor]:
        return Layout(*(torch.as_tensor(np.asarray(v), dtype=torch.long, device=device) for v in self._fields()))

    def select(self, i: int) -> Layout[ArrayT]:
        return Layout(*(v[i : i + 1] for v in self._fields()))

    def _fields(self) -> tuple[ArrayT, ArrayT, ArrayT, ArrayT, ArrayT]:
        return (self.index, self.position, self.clutter_source, self.clutter_offset, self.clutter_position)


def _sample(integers, index, num_images: int, image_hw: tuple[int, int], spec: CanvasSpec, stack) -> Layout:
    """Shared sampler: ``integers(high, shape)`` draws uniform integers in ``[0, high)``."""
    h, w = image_hw
    batch = index.shape[0]
    pieces = spec.clutter_pieces
    side_h, side_w = spec.side(h, w)
    if spec.is_identity:
        position = integers(1, (batch, 2))  # always (0, 0); keeps the draw count fixed
    else:
        position = stack([integers(side_w - w + 1, (batch,)), integers(side_h - h + 1, (batch,))], -1)
    # Other images of the same split: draw from N - 1 and skip the example's own index.
    source = integers(max(num_images - 1, 1), (batch, pieces))
    if num_images > 1:
        source = source + (source >= index[:, None])
    c = spec.clutter_size
    offset = stack([integers(w - c + 1, (batch, pieces)), integers(h - c + 1, (batch, pieces))], -1)
    place = stack([integers(side_w - c + 1, (batch, pieces)), integers(side_h - c + 1, (batch, pieces))], -1)
    return Layout(index, position, source, offset, place)


def sample_layout_numpy(
    rng: np.random.Generator, index: np.ndarray, num_images: int, image_hw: tuple[int, int], spec: CanvasSpec
) -> Layout[np.ndarray]:
    """Layouts for examples ``index`` (B,) drawn from a numpy generator."""
    index = np.asarray(index, dtype=np.int64)
    return _sample(
        lambda high, shape: rng.integers(0, high, size=shape, dtype=np.int64),
        index,
        num_images,
        image_hw,
        spec,
        lambda arrays, axis: np.stack(arrays, axis=axis),
    )


def sample_layout_torch(
    generator: torch.Generator, index: torch.Tensor, num_images: int, image_hw: tuple[int, int], spec: CanvasSpec
) -> Layout[torch.Tensor]:
    """Layouts for examples ``index`` (B,) drawn from a torch generator on ``index.device``."""
    device = index.device
    return _sample(
        lambda high, shape: torch.randint(0, high, shape, generator=generator, device=device),
        index,
        num_images,
        image_hw,
        spec,
        lambda tensors, dim: torch.stack(tensors, dim=dim),
    )


def fixed_layout(
    num_images: int, image_hw: tuple[int, int], spec: CanvasSpec, seed: int | Sequence[int]
) -> Layout[np.ndarray]:
    """The fixed layout of a validation or test set: every image once, in order, placed by ``seed``.

    Uses numpy's PCG64 generator, whose integer streams are the same on every platform; ``seed`` is anything
    ``np.random.default_rng`` takes (an int or a sequence of ints).
    """
    rng = np.random.default_rng(seed)
    return sample_layout_numpy(rng, np.arange(num_images), num_images, image_hw, spec)


def compose_numpy(images: np.ndarray, layout: Layout[np.ndarray], spec: CanvasSpec, example: int = 0) -> np.ndarray:
    """Canvas of example ``example`` of ``layout``: ``(C, S, S)`` uint8. ``images`` is (N, C, h, w) uint8."""
    index = int(layout.index[example])
    image = images[index]
    if spec.is_identity:
        return image
    channels, h, w = image.shape
    side_h, side_w = spec.side(h, w)
    canvas = np.zeros((channels, side_h, side_w), dtype=np.int32)
    c = spec.clutter_size
    for k in range(spec.clutter_pieces):
        src = images[int(layout.clutter_source[example, k])]
        ox, oy = (int(v) for v in layout.clutter_offset[example, k])
        px, py = (int(v) for v in layout.clutter_position[example, k])
        canvas[:, py : py + c, px : px + c] += src[:, oy : oy + c, ox : ox + c]
    x, y = (int(v) for v in layout.position[example])
    canvas[:, y : y + h, x : x + w] += image
    return np.minimum(canvas, 255).astype(np.uint8)


def compose_torch(images: torch.Tensor, layout: Layout[torch.Tensor], spec: CanvasSpec) -> torch.Tensor:
    """Canvases of a batch: ``(B, C, S, S)`` uint8 on ``images.device``; ``images`` is (N, C, h, w) uint8.

    Batched scatter-adds: one per piece kind (clutter, image), no loop over the batch.
    """
    index = layout.index
    if spec.is_identity:
        return images.index_select(0, index)
    device = images.device
    _, channels, h, w = images.shape
    side_h, side_w = spec.side(h, w)
    batch = index.shape[0]
    # Exact integer sums before the clip: int16 on CPU (a pixel sums at most clutter_pieces + 1 values of 255; half
    # the memory traffic of float32, about 1.6x faster there), integer-valued float32 elsewhere (exact below 2**24;
    # float scatter-adds are the fast ones on GPUs).
    fits_int16 = (spec.clutter_pieces + 1) * 255 <= torch.iinfo(torch.int16).max
    dtype = torch.int16 if device.type == "cpu" and fits_int16 else torch.float32
    canvas = torch.zeros(batch * channels * side_h * side_w, dtype=dtype, device=device)
    compose_into(canvas, images, layout, spec, plane_stride=side_h * side_w, row_stride=side_w)
    canvas = canvas.clamp_(max=255).to(torch.uint8)
    return canvas.reshape(batch, channels, side_h, side_w)  # (B, C, S, S)


def compose_into(
    flat: torch.Tensor,
    images: torch.Tensor,
    layout: Layout[torch.Tensor],
    spec: CanvasSpec,
    *,
    plane_stride: int,
    row_stride: int,
    offset: int = 0,
) -> None:
    """Add the unclipped canvases of ``layout`` into ``flat``, a zeroed 1-D integer or float tensor that holds
    canvas plane ``(b, c)``'s pixel ``(y, x)`` at ``offset + (b C + c) plane_stride + y row_stride + x``: a plain
    ``(B, C, S, S)`` block (``compose_torch``), or the interior of padded summed-area tables that the vector
    environment then sums in place. The caller clips the sums at 255. Not for identity canvases (no layout to add).
    """
    index = layout.index
    device = images.device
    _, channels, h, w = images.shape
    batch = index.shape[0]
    chan_base = (torch.arange(batch, device=device)[:, None] * channels + torch.arange(channels, device=device)) * (
        plane_stride
    ) + offset  # (B, C): flat position of each canvas plane's first pixel

    def add(values: torch.Tensor, x: torch.Tensor, y: torch.Tensor, ph: int, pw: int) -> None:
        # values (B, P, C, ph, pw); x, y (B, P) top-left on the canvas.
        rows = y[..., None] + torch.arange(ph, device=device)  # (B, P, ph)
        cols = x[..., None] + torch.arange(pw, device=device)  # (B, P, pw)
        target = (
            chan_base[:, None, :, None, None] + rows[:, :, None, :, None] * row_stride + cols[:, :, None, None, :]
        )  # (B, P, C, ph, pw)
        flat.scatter_add_(0, target.reshape(-1), values.reshape(-1).to(flat.dtype))

    if spec.clutter_pieces:
        c = spec.clutter_size
        src = layout.clutter_source  # (B, P)
        ox, oy = layout.clutter_offset[..., 0], layout.clutter_offset[..., 1]
        src_rows = oy[..., None] + torch.arange(c, device=device)  # (B, P, c)
        src_cols = ox[..., None] + torch.arange(c, device=device)  # (B, P, c)
        flat_src = (
            (src[..., None] * channels + torch.arange(channels, device=device))[..., None, None] * (h * w)
            + src_rows[:, :, None, :, None] * w
            + src_cols[:, :, None, None, :]
        )  # (B, P, C, c, c)
        # index_select on the flat images: several times faster on CPU than torch.take (no index wrapping)
        pieces = images.reshape(-1).index_select(0, flat_src.reshape(-1)).view(flat_src.shape)  # (B, P, C, c, c)
        add(pieces, layout.clutter_position[..., 0], layout.clutter_position[..., 1], c, c)
    add(images.index_select(0, index)[:, None], layout.position[:, None, 0], layout.position[:, None, 1], h, w)
