"""The glimpse sensor (the paper's "retina" ``rho(x, l)``).

A glimpse is ``num_scales`` square patches centred on one location. Patch ``i`` (``i = 0 .. k-1``) covers
``glimpse_size * scale**i`` pixels on a side and is area-averaged down to ``glimpse_size x glimpse_size``, so the
first patch is seen at full resolution and each next one is ``scale`` times wider and coarser. Pixels outside the
image read as zero.

Coordinates (as in Mnih et al. 2014): a location is ``(x, y)`` with ``x`` horizontal (columns) and ``y``
vertical (rows), both in ``[-1, 1]``; ``(0, 0)`` is the image centre, ``(-1, -1)`` the top-left corner and
``(1, 1)`` the bottom-right corner. Locations beyond ``[-1, 1]`` are allowed here (the patch simply reads zeros).

Pixel rounding convention: pixel ``j`` covers the continuous interval ``[j, j + 1)``, so an image of width ``W``
spans ``[0, W]`` and the location ``x`` maps to ``c = (x + 1) / 2 * W``. A patch of side ``p`` starts at pixel
``floor(c - p / 2 + 1 / 2)`` (``c - p / 2`` rounded half up) and covers ``p`` pixels from there. On a 28 x 28 image the
centre ``(0, 0)`` gives an 8 x 8 patch over pixels 10..17, exactly centred. Both implementations compute the start
in float64 with the same operations, so they always pick the same pixels.

Two implementations that agree to 1e-6:

* :func:`glimpse_numpy`: one image, numpy, used by the single environment.
* :func:`glimpse_torch`: a batch, torch, no Python loop over the batch, runs on any device. It reads block sums
  from a summed-area table (:func:`integral_image`), so its cost per glimpse does not grow with the patch size.

>>> import numpy as np
>>> image = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
>>> glimpse_numpy(image, np.array([0.0, 0.0]), glimpse_size=2, num_scales=2, scale=2)[:, 0]
array([[[ 5. ,  6. ],
        [ 9. , 10. ]],
<BLANKLINE>
       [[ 2.5,  4.5],
        [10.5, 12.5]]], dtype=float32)
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class SensorSpec:
    """Geometry of the glimpse sensor.

    :param glimpse_size: side ``g`` of every patch after resizing, in pixels.
    :param num_scales: number ``k`` of patches in one glimpse.
    :param scale: integer factor ``s`` by which each patch is wider than the previous one.
    """

    glimpse_size: int = 8
    num_scales: int = 1
    scale: int = 2

    def __post_init__(self) -> None:
        for name in ("glimpse_size", "num_scales", "scale"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")

    def patch_size(self, i: int) -> int:
        """Side in image pixels of patch ``i`` (0-based)."""
        return self.glimpse_size * self.scale**i

    @property
    def largest_patch(self) -> int:
        return self.patch_size(self.num_scales - 1)

    def shape(self, channels: int) -> tuple[int, int, int, int]:
        """Shape ``(k, C, g, g)`` of one glimpse."""
        return (self.num_scales, channels, self.glimpse_size, self.glimpse_size)


_FAR = 1e9


def patch_start(location: np.ndarray | torch.Tensor, extent: int | torch.Tensor, patch: int | torch.Tensor):
    """First pixel index of a ``patch``-wide window centred on normalised ``location`` along an axis of ``extent``.

    Works on numpy arrays and torch tensors alike (float64 in, integer-valued float64 out); with a tensor ``location``,
    ``extent`` may be a float64 tensor of extents (one per axis) and ``patch`` a tensor of sides (one per scale) that
    broadcast against it.
    """
    # Locations are clamped to +-1e9 first: every patch there reads only zeros, as it does anywhere farther out, and
    # the arithmetic cannot overflow (numpy's int() of inf, torch's undefined float -> long of values beyond 2**63).
    if isinstance(location, torch.Tensor):
        return torch.floor((location.clamp(-_FAR, _FAR) + 1.0) * 0.5 * extent - patch * 0.5 + 0.5)
    return np.floor((np.clip(location, -_FAR, _FAR) + 1.0) * 0.5 * extent - patch * 0.5 + 0.5)


def _as_float(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image.astype(np.float32) / np.float32(255.0)
    return image.astype(np.float32, copy=False)


def glimpse_numpy(
    image: np.ndarray, location: np.ndarray, *, glimpse_size: int, num_scales: int = 1, scale: int = 2
) -> np.ndarray:
    """Glimpse of one image.

    :param image: ``(C, H, W)`` uint8 (read as ``value / 255``) or float.
    :param location: ``(2,)`` normalised ``(x, y)``.
    :return: ``(k, C, g, g)`` float32.
    """
    spec = SensorSpec(glimpse_size, num_scales, scale)
    image = _as_float(np.asarray(image))
    channels, height, width = image.shape
    loc = np.asarray(location, dtype=np.float64)
    out = np.empty(spec.shape(channels), dtype=np.float32)
    g = spec.glimpse_size
    for i in range(spec.num_scales):
        p = spec.patch_size(i)
        f = p // g
        x0 = int(patch_start(loc[0], width, p))
        y0 = int(patch_start(loc[1], height, p))
        patch = np.zeros((channels, p, p), dtype=np.float32)
        # Intersection of the window [y0, y0 + p) x [x0, x0 + p) with the image.
        ya, yb = max(y0, 0), min(y0 + p, height)
        xa, xb = max(x0, 0), min(x0 + p, width)
        if ya < yb and xa < xb:
            patch[:, ya - y0 : yb - y0, xa - x0 : xb - x0] = image[:, ya:yb, xa:xb]
        out[i] = patch.reshape(channels, g, f, g, f).mean(axis=(2, 4))  # (C, g, f, g, f) -> (C, g, g)
    return out


def integral_image(images: torch.Tensor, *, out: torch.Tensor | None = None) -> torch.Tensor:
    """Summed-area table of a batch, with a zero first row and column.

    ``S[b, c, y, x]`` is the sum of ``images[b, c, :y, :x]``. uint8 images are summed as int32, exact for any image
    up to 2**31 / 255 = 8,421,504 pixels (2,902 x 2,902; int64 beyond); float images are summed in float64.

    Built as a running sum along each row (one in-place ``cumsum`` over the contiguous last axis) followed by a running
    sum down the columns as ``H - 1`` in-place row additions, each over the whole batch: on CPU that is about twice as
    fast as a ``cumsum`` over the row axis, whose inner loop strides across rows. Small batches take the ``cumsum``
    instead (fewer Python-level operations). Integer sums are exact in either order, so both give the same table.
    uint8 pixels are widened to int32 in one copy before the row sums: on CPU a ``cumsum`` that converts as it sums
    runs about three times slower than the copy and an integer ``cumsum`` together, and an integer sum's one-cycle
    latency makes the row sums about 1.5x faster than float32 ones.

    :param images: ``(B, C, H, W)`` uint8 or float.
    :param out: a table to overwrite if it has the result's shape, dtype and device (else a new one is allocated):
        an environment that rebuilds its tables every episode reuses their memory, which on CPU saves the page faults
        of a fresh allocation of that size (about a third of a reset's time at 1024 canvases of 60 x 60).
    :return: ``(B, C, H + 1, W + 1)`` (``out`` itself when it was reused): int32 (int64) for uint8 images, float64
        for float ones.
    """
    table = empty_table(images.shape, images.dtype, images.device, out=out)
    table[:, :, 0, :].zero_()
    table[:, :, 1:, 0].zero_()
    table[:, :, 1:, 1:].copy_(images)  # widened once (uint8 -> int32, float -> float64)
    return integrate_(table)


def empty_table(
    image_shape: tuple[int, ...] | torch.Size,
    image_dtype: torch.dtype,
    device: torch.device,
    *,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """An uninitialised summed-area table ``(B, C, H + 1, W + 1)`` for ``(B, C, H, W)`` images of ``image_dtype``:
    ``out`` itself when it has that shape, dtype and device (its memory reused), else a new one. The dtype is int32
    for uint8 images while ``255 H W < 2**31`` (int64 beyond), float64 for float images."""
    batch, channels, height, width = image_shape
    if image_dtype == torch.uint8:
        dtype = torch.int32 if height * width * 255 < 2**31 else torch.int64
    else:
        dtype = torch.float64
    shape = (batch, channels, height + 1, width + 1)
    if out is not None and out.shape == shape and out.dtype == dtype and out.device == device:
        return out
    return torch.empty(shape, dtype=dtype, device=device)


def integrate_(table: torch.Tensor) -> torch.Tensor:
    """Turn ``table`` ``(B, C, H + 1, W + 1)``, whose first row and column are zero and whose interior holds images,
    into their summed-area table, in place (see :func:`integral_image`); returns ``table``."""
    planes, height = table.shape[0] * table.shape[1], table.shape[2] - 1
    inner = table[:, :, 1:, 1:]  # (B, C, H, W) view
    inner.cumsum_(dim=3)  # running sums along each row
    if planes < _ROW_LOOP_MIN_PLANES or table.device.type != "cpu":
        inner.copy_(inner.cumsum(dim=2))
    else:
        for y in range(1, height):
            inner[:, :, y].add_(inner[:, :, y - 1])  # (B, C, W): running sums down the columns
    return table


#: batches of at least this many planes build the column sums of :func:`integral_image` row by row on CPU
_ROW_LOOP_MIN_PLANES = 64


@functools.lru_cache(maxsize=64)
def _read_geometry(
    spec: SensorSpec, height: int, width: int, device: torch.device, pixel_scale: float, work: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """What a read of ``spec`` from a table of ``height x width`` images needs whatever the locations, made once per
    geometry (a read then costs about 30 tensor operations instead of 55: a glimpse of a batch of 128 is mostly
    per-operation overhead). All are made on the device from integers, with no host-to-device copy, so even a first
    read inside a CUDA graph capture is allowed.

    :return: ``sizes`` (k,) float64 patch sides ``g f``; ``corner`` (k, g + 1) offsets of the block corners from a
        patch's start; ``extent`` (2, 1) float64 ``(W, H)``; ``limit`` (2, 1, 1) long ``(W, H)``, the last corner
        index; ``area`` (k, 1, 1) ``f^2 / pixel_scale`` in ``work``.
    """
    g, k = spec.glimpse_size, spec.num_scales
    steps = torch.full((k,), spec.scale, device=device).pow(torch.arange(k, device=device))  # (k,) block side f
    sizes = (steps * g).to(torch.float64)  # (k,) patch side g f per scale
    corner = torch.arange(g + 1, device=device) * steps[:, None]  # (k, g + 1)
    axis_extent = torch.arange(2, device=device) * (height - width) + width  # (2,) = (W, H)
    # The divisor is formed in float64 and rounded once (255 f^2 exactly for uint8 tables), so a full block of 255s
    # reads exactly 1.0 (in float32 it was 254.99998 f^2: 1.0000001).
    area = (steps.to(torch.float64) ** 2 / pixel_scale).to(work).reshape(k, 1, 1)  # (k, 1, 1)
    return sizes, corner, axis_extent.to(torch.float64)[:, None], axis_extent[:, None, None], area


def glimpse_from_integral(
    table: torch.Tensor,
    locations: torch.Tensor,
    spec: SensorSpec,
    *,
    pixel_scale: float = 1.0,
    table_row: torch.Tensor | None = None,
) -> torch.Tensor:
    """Glimpses read from a summed-area table (see :func:`integral_image`).

    Each output pixel is the sum of its ``f x f`` block (``f = scale**i``) taken from four table entries, and the
    ``(g + 1) x (g + 1)`` block corners of all scales are fetched in one gather; clamping the corners to the image
    makes everything outside it count as zero. The cost per glimpse is ``k (g + 1)^2`` reads, whatever the scale, so a
    table built once per episode serves every glimpse of it.

    :param table: ``(R, C, H + 1, W + 1)``.
    :param locations: ``(B, 2)`` normalised ``(x, y)``.
    :param pixel_scale: the pixel value of one table unit (``1 / 255`` for tables of uint8 images).
    :param table_row: ``(B,)`` which table each glimpse reads (default: glimpse ``b`` reads table ``b``); lets several
        glimpses share one image without copying its table.
    :return: ``(B, k, C, g, g)`` float32.
    """
    _, channels, height1, width1 = table.shape
    batch = locations.shape[0]
    height, width = height1 - 1, width1 - 1
    device = table.device
    # The entries of an integer table (uint8 images) are read into float32 when every one of them is exactly
    # representable there (255 H W <= 2**24: images up to 256 x 256), else into float64, as are those of a float64
    # table; the block sums of integer entries are then exact. One conversion, of the gathered corners alone.
    exact_in_float32 = not table.dtype.is_floating_point and 255 * height * width <= 2**24
    work = torch.float32 if exact_in_float32 else torch.float64
    sizes, corner, extent, limit, area = _read_geometry(spec, height, width, device, pixel_scale, work)
    # Both axes at once: (B, 2, 1) locations against the (2, 1) extents (W, H) and the (k,) patch sides.
    loc = locations.to(device=device, dtype=torch.float64)[:, :, None]  # (B, 2, 1)
    start = patch_start(loc, extent, sizes).long()  # (B, 2, k): first column and first row of each patch
    ends = torch.minimum((start[..., None] + corner).clamp_(min=0), limit)  # (B, 2, k, g + 1) block corners
    cols, rows = ends[:, 0], ends[:, 1]  # (B, k, g + 1) each
    row = torch.arange(batch, device=device) if table_row is None else table_row.to(device)
    plane = (row[:, None] * channels + torch.arange(channels, device=device)) * (height1 * width1)  # (B, C)
    row_start = rows[:, None] * width1 + plane[:, :, None, None]  # (B, C, k, g + 1): flat index of each corner row
    index = row_start[..., :, None] + cols[:, None, :, None, :]  # (B, C, k, g + 1, g + 1)
    # One gather for every corner of every scale. index_select on the flat table is several times faster on CPU than
    # torch.take or advanced indexing (no per-element bounds wrapping), and as fast on CUDA.
    corners = table.reshape(-1).index_select(0, index.reshape(-1)).view(index.shape).to(work)  # (B, C, k, g+1, g+1)
    # Block sum S[y+1, x+1] - S[y+1, x] - S[y, x+1] + S[y, x] as two differences.
    across = corners[..., 1:] - corners[..., :-1]  # (B, C, k, g + 1, g)
    sums = across[..., 1:, :] - across[..., :-1, :]  # (B, C, k, g, g)
    means = sums.div_(area).to(torch.float32)  # (B, C, k, g, g)
    return means.transpose(1, 2)  # (B, k, C, g, g)


def glimpse_torch(
    images: torch.Tensor, locations: torch.Tensor, *, glimpse_size: int, num_scales: int = 1, scale: int = 2
) -> torch.Tensor:
    """Glimpses of a batch of images, one location each, as batched tensor operations on ``images.device``.

    Builds the images' summed-area table and reads the glimpses from it (:func:`glimpse_from_integral`); an
    environment that takes several glimpses of one image builds the table once per episode instead.

    :param images: ``(B, C, H, W)`` uint8 (read as ``value / 255``) or float.
    :param locations: ``(B, 2)`` normalised ``(x, y)``.
    :return: ``(B, k, C, g, g)`` float32 on the images' device.
    """
    spec = SensorSpec(glimpse_size, num_scales, scale)
    pixel_scale = 1.0 / 255.0 if images.dtype == torch.uint8 else 1.0
    out = glimpse_from_integral(integral_image(images), locations, spec, pixel_scale=pixel_scale)
    if images.dtype != torch.uint8 and images.numel():
        # Block sums of a float table are differences of float64 running sums, which can round a block of zeros to
        # -1e-13 or so; a block mean (zeros outside the image) lies between min(0, image min) and max(0, image max).
        out = out.clamp_(min(0.0, float(images.min())), max(0.0, float(images.max())))
    return out
