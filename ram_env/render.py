"""Drawing an episode: the canvas with every glimpse's boxes at all scales and the path between glimpses.

Pure numpy, so environments render without matplotlib; :func:`draw_episode` is also what the evaluation's figures and
GIFs use.
"""

from __future__ import annotations

import numpy as np

from ram_env.sensor import SensorSpec, patch_start

# Colours of successive glimpses (RGB), cycled; the last glimpse is drawn in red.
_PALETTE = np.array(
    [[255, 200, 0], [0, 200, 255], [0, 255, 120], [255, 120, 255], [255, 255, 255], [160, 160, 255]], dtype=np.uint8
)
_LAST = np.array([255, 40, 40], dtype=np.uint8)
#: colour of the line joining successive glimpse centres (RGB).
PATH_COLOUR = np.array([255, 255, 0], dtype=np.uint8)


def step_colours(steps: int) -> np.ndarray:
    """``(steps, 3)`` uint8 RGB colour of each glimpse of an episode of ``steps`` glimpses, as :func:`draw_episode`
    draws them (the palette cycled, the last glimpse red); for legends."""
    colours = _PALETTE[np.arange(steps) % len(_PALETTE)].copy()
    if steps:
        colours[-1] = _LAST
    return colours


def draw_episode(canvas: np.ndarray, locations: np.ndarray, sensor: SensorSpec, *, min_side: int = 256) -> np.ndarray:
    """RGB picture of an episode.

    :param canvas: ``(C, H, W)`` uint8, or float in [0, 1] (C = 1 or 3).
    :param locations: ``(T, 2)`` normalised ``(x, y)`` of the glimpses so far (may be empty).
    :param sensor: the sensor geometry, for the box sizes.
    :param min_side: the picture is upscaled by an integer factor to at least this many pixels on its short side.
    :return: ``(H * f, W * f, 3)`` uint8.
    """
    channels, height, width = canvas.shape
    f = max(1, -(-min_side // min(height, width)))
    rgb = canvas / 255.0 if canvas.dtype == np.uint8 else np.clip(canvas, 0.0, 1.0)
    rgb = np.repeat(rgb, 3, axis=0) if channels == 1 else rgb[:3]
    image = (rgb.transpose(1, 2, 0) * 255).astype(np.uint8)  # (H, W, 3)
    image = image.repeat(f, axis=0).repeat(f, axis=1)  # (H*f, W*f, 3)
    locations = np.asarray(locations, dtype=np.float64).reshape(-1, 2)
    centres = []
    colours = step_colours(len(locations))
    for t, loc in enumerate(locations):
        colour = colours[t]
        for i in range(sensor.num_scales):
            p = sensor.patch_size(i)
            x0 = int(patch_start(loc[0], width, p)) * f
            y0 = int(patch_start(loc[1], height, p)) * f
            _rectangle(image, x0, y0, p * f, colour)
        centres.append(((loc[0] + 1) / 2 * width * f, (loc[1] + 1) / 2 * height * f))
    for (xa, ya), (xb, yb) in zip(centres[:-1], centres[1:], strict=True):
        _line(image, xa, ya, xb, yb, PATH_COLOUR)
    return image


def _rectangle(image: np.ndarray, x0: int, y0: int, side: int, colour: np.ndarray) -> None:
    """Outline of a square (clipped to the picture)."""
    h, w = image.shape[:2]
    x1, y1 = x0 + side - 1, y0 + side - 1
    xs = slice(max(x0, 0), min(x1 + 1, w))
    ys = slice(max(y0, 0), min(y1 + 1, h))
    for y in (y0, y1):
        if 0 <= y < h:
            image[y, xs] = colour
    for x in (x0, x1):
        if 0 <= x < w:
            image[ys, x] = colour


def _line(image: np.ndarray, xa: float, ya: float, xb: float, yb: float, colour: np.ndarray) -> None:
    h, w = image.shape[:2]
    n = int(max(abs(xb - xa), abs(yb - ya))) + 1
    xs = np.linspace(xa, xb, n).astype(int)
    ys = np.linspace(ya, yb, n).astype(int)
    keep = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
    image[ys[keep], xs[keep]] = colour
