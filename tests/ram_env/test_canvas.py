"""Canvas composition: clutter (added, clipped), sampling ranges, numpy == torch, pinned test layouts."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

import ram_env
from ram_env.canvas import (
    CanvasSpec,
    Layout,
    compose_numpy,
    compose_torch,
    fixed_layout,
    sample_layout_numpy,
    sample_layout_torch,
)
from ram_env.task import Task, TaskConfig


def _layout(index, position, source, offset, place) -> Layout:
    """A hand-made layout of one example (numpy, int64)."""
    source = np.asarray(source, dtype=np.int64).reshape(1, -1)  # (1, P)
    offset = np.asarray(offset, dtype=np.int64).reshape(1, -1, 2)  # (1, P, 2)
    place = np.asarray(place, dtype=np.int64).reshape(1, -1, 2)  # (1, P, 2)
    return Layout(np.asarray(index, dtype=np.int64), np.asarray(position, dtype=np.int64), source, offset, place)


def _both(images: np.ndarray, layout: Layout, spec: CanvasSpec) -> np.ndarray:
    """Compose example 0 with numpy and torch, check they agree bit for bit, return the canvas."""
    a = compose_numpy(images, layout, spec, 0)
    b = compose_torch(torch.from_numpy(images.copy()), layout.to_torch("cpu"), spec)[0].numpy()
    assert a.dtype == np.uint8 and b.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    return a


# ------------------------------------------------------------------------------------------ clutter semantics


def test_digit_is_added_over_clutter_not_pasted():
    images = np.zeros((2, 1, 4, 4), dtype=np.uint8)
    images[0] = 100  # the example's digit
    images[1] = 50  # clutter source
    spec = CanvasSpec(canvas_size=8, clutter_pieces=1, clutter_size=2)
    # digit at (x=0, y=0) covers [0, 4)^2; the 2 x 2 piece at (x=3, y=3) covers [3, 5)^2; overlap (3, 3).
    canvas = _both(images, _layout([0], [[0, 0]], [[1]], [[0, 0]], [[3, 3]]), spec)[0]
    assert canvas[3, 3] == 150  # a + b, neither 100 (pasted digit) nor an alpha blend
    assert canvas[0, 0] == 100 and canvas[4, 4] == 50 and canvas[3, 4] == 50 and canvas[4, 3] == 50
    assert canvas[7, 7] == 0
    assert canvas.sum() == 16 * 100 + 4 * 50


def test_sum_is_clipped_at_255_and_pieces_add_to_each_other():
    images = np.zeros((3, 1, 4, 4), dtype=np.uint8)
    images[0] = 200  # digit
    images[1] = 100
    images[2] = 90
    spec = CanvasSpec(canvas_size=8, clutter_pieces=3, clutter_size=2)
    # digit [0, 4)^2; pieces: A (image 1) [5, 7)^2, B (image 2) [6, 8)^2, C (image 1) [3, 5)^2.
    layout = _layout([0], [[0, 0]], [1, 2, 1], [[0, 0]] * 3, [[5, 5], [6, 6], [3, 3]])
    canvas = _both(images, layout, spec)[0]
    assert canvas[6, 6] == 100 + 90  # two pieces overlap: added
    assert canvas[3, 3] == min(255, 200 + 100) == 255  # digit over a piece: added, then clipped
    assert canvas[4, 4] == 100 and canvas[5, 5] == 100 and canvas[7, 7] == 90 and canvas[0, 0] == 200
    assert canvas[0, 7] == 0


def test_clutter_is_cropped_at_its_offset():
    images = np.zeros((2, 1, 4, 4), dtype=np.uint8)
    images[1, 0] = np.arange(16, dtype=np.uint8).reshape(4, 4)
    spec = CanvasSpec(canvas_size=8, clutter_pieces=1, clutter_size=2)
    # crop at offset (x=1, y=2) of image 1 -> [[9, 10], [13, 14]], placed at (x=5, y=0).
    canvas = _both(images, _layout([0], [[0, 0]], [[1]], [[1, 2]], [[5, 0]]), spec)[0]
    np.testing.assert_array_equal(canvas[0:2, 5:7], [[9, 10], [13, 14]])


def test_identity_canvas_is_the_image():
    images = np.random.default_rng(0).integers(0, 256, size=(5, 3, 6, 6), dtype=np.uint8)
    spec = CanvasSpec()
    layout = sample_layout_numpy(np.random.default_rng(1), np.array([3, 1]), 5, (6, 6), spec)
    np.testing.assert_array_equal(compose_numpy(images, layout, spec, 0), images[3])
    out = compose_torch(torch.from_numpy(images.copy()), layout.to_torch("cpu"), spec)
    np.testing.assert_array_equal(out.numpy(), images[[3, 1]])


# -------------------------------------------------------------------------------------------------- sampling


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_clutter_never_comes_from_the_example_itself(backend):
    num_images, batch = 4, 2000
    spec = CanvasSpec(canvas_size=20, clutter_pieces=6, clutter_size=3)
    index = np.arange(batch) % num_images
    if backend == "numpy":
        layout = sample_layout_numpy(np.random.default_rng(0), index, num_images, (8, 8), spec)
    else:
        gen = torch.Generator().manual_seed(0)
        layout = sample_layout_torch(gen, torch.from_numpy(index), num_images, (8, 8), spec)
    source = np.asarray(layout.clutter_source)
    assert source.shape == (batch, 6)
    assert (source != index[:, None]).all()
    for i in range(num_images):  # every *other* image is used, each about equally often
        counts = np.bincount(source[index == i].ravel(), minlength=num_images)
        others = np.delete(counts, i)
        assert counts[i] == 0 and others.min() > 0.8 * others.mean()


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_positions_keep_every_piece_inside_the_canvas(backend):
    h, w, side, c = 7, 5, 12, 3
    spec = CanvasSpec(canvas_size=side, clutter_pieces=4, clutter_size=c)
    index = np.arange(3000) % 10
    if backend == "numpy":
        layout = sample_layout_numpy(np.random.default_rng(2), index, 10, (h, w), spec)
    else:
        layout = sample_layout_torch(torch.Generator().manual_seed(2), torch.from_numpy(index), 10, (h, w), spec)
    pos, off, place = (np.asarray(v) for v in (layout.position, layout.clutter_offset, layout.clutter_position))
    # (x, y) order: x ranges over the width, y over the height; every position in range is reached.
    assert set(pos[:, 0]) == set(range(side - w + 1)) and set(pos[:, 1]) == set(range(side - h + 1))
    assert set(off[..., 0].ravel()) == set(range(w - c + 1)) and set(off[..., 1].ravel()) == set(range(h - c + 1))
    assert set(place[..., 0].ravel()) == set(range(side - c + 1))
    assert set(place[..., 1].ravel()) == set(range(side - c + 1))


def test_canvas_spec_validation_messages():
    with pytest.raises(ValueError, match="smaller than the images"):
        CanvasSpec(canvas_size=20).validate(28, 28)
    with pytest.raises(ValueError, match="needs a canvas_size"):
        CanvasSpec(clutter_pieces=2).validate(28, 28)
    with pytest.raises(ValueError, match="clutter_pieces must be >= 0"):
        CanvasSpec(canvas_size=60, clutter_pieces=-1).validate(28, 28)
    with pytest.raises(ValueError, match="clutter_size"):
        CanvasSpec(canvas_size=60, clutter_pieces=2, clutter_size=40).validate(28, 28)


# ------------------------------------------------------------------------------------- numpy == torch compose


@pytest.mark.parametrize(
    "channels, hw, side, pieces, c", [(1, (8, 8), 20, 4, 3), (3, (6, 9), 15, 5, 4), (1, (8, 8), 8, 3, 8)]
)
def test_compose_numpy_equals_torch_bitwise(channels, hw, side, pieces, c):
    rng = np.random.default_rng(channels + side)
    images = rng.integers(0, 256, size=(12, channels, *hw), dtype=np.uint8)
    spec = CanvasSpec(canvas_size=side, clutter_pieces=pieces, clutter_size=c)
    layout = sample_layout_numpy(rng, rng.integers(0, 12, size=64), 12, hw, spec)
    got = compose_torch(torch.from_numpy(images), layout.to_torch("cpu"), spec)
    assert got.shape == (64, channels, side, side) and got.dtype == torch.uint8
    want = np.stack([compose_numpy(images, layout, spec, b) for b in range(64)])
    np.testing.assert_array_equal(got.numpy(), want)
    assert (want == 255).any()  # the clipping path is exercised


@pytest.mark.parametrize("pieces", [127, 128, 300])  # int16 sums up to 127 pieces, wider sums beyond
def test_compose_torch_clips_sums_beyond_int16(pieces):
    # Every piece is 255 and lands on the same 2 x 2 square: the sum there is (pieces + 1) * 255, past 32767 from 128
    # pieces on, and must still clip to 255 (an int16 sum would wrap to a negative value).
    images = np.full((2, 1, 4, 4), 255, dtype=np.uint8)
    spec = CanvasSpec(canvas_size=6, clutter_pieces=pieces, clutter_size=2)
    layout = _layout([0], [[2, 2]], [[1] * pieces], [[[0, 0]] * pieces], [[[2, 2]] * pieces])
    canvas = compose_torch(torch.from_numpy(images), layout.to_torch("cpu"), spec)[0, 0]
    np.testing.assert_array_equal(canvas.numpy(), compose_numpy(images, layout, spec)[0])
    assert canvas[2, 2] == 255 and canvas[0, 0] == 0


# ------------------------------------------------------------------------------------- fixed layouts (pinned)


def test_fixed_layout_is_deterministic_and_seeded():
    spec = CanvasSpec(canvas_size=30, clutter_pieces=3, clutter_size=4)
    a = fixed_layout(50, (10, 10), spec, seed=[0, 2])
    b = fixed_layout(50, (10, 10), spec, seed=[0, 2])
    c = fixed_layout(50, (10, 10), spec, seed=[1, 2])
    np.testing.assert_array_equal(a.index, np.arange(50))
    for x, y in zip(a._fields(), b._fields(), strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.position, c.position)


# sha256 of the uint8 bytes of the canvases (500, 1, S, S) of test images 0..499 (real MNIST, layout_seed=0),
# composed with compose_torch from Task.fixed_layout. A change here changes every reported test score: if it
# is intended, recompute the digests and say so in the commit.
PINNED = {
    "RAM/TranslatedMNIST60-v0": "e1df320c5070078ccc46d4ed4ef85062eef07034dc67f8b280d46be4d01b6706",
    "RAM/ClutteredMNIST60-v0": "b4c95fd728a316c4f75ee5b2ebafc7e858234d853bd1dc38df2fbbdf7eea52e5",
    "RAM/ClutteredMNIST100-v0": "5284fdecad0e21639d303b3a1e0110ce8d894e8f249d704f09a835e6e355bdaa",
}


@pytest.mark.requires_mnist
@pytest.mark.parametrize("env_id", sorted(PINNED))
def test_fixed_test_canvases_are_pinned(env_id):
    task = Task(TaskConfig(split="test", **ram_env.BENCHMARKS[env_id]))
    first = Layout(*(v[:500] for v in task.fixed_layout._fields()))
    images = torch.from_numpy(np.array(task.data.images))
    canvases = compose_torch(images, first.to_torch("cpu"), task.config.canvas).numpy()
    side = task.config.canvas_size
    assert canvases.shape == (500, 1, side, side)
    np.testing.assert_array_equal(first.index, np.arange(500))
    # a second Task builds the same layout (deterministic, not cached state)
    again = Task(TaskConfig(split="test", **ram_env.BENCHMARKS[env_id])).fixed_layout
    np.testing.assert_array_equal(again.clutter_position[:500], first.clutter_position)
    np.testing.assert_array_equal(compose_numpy(task.data.images, first, task.config.canvas, 7), canvases[7])
    assert hashlib.sha256(canvases.tobytes()).hexdigest() == PINNED[env_id]
