"""Figures of an evaluation: confusion matrix, a grid of glimpse paths, an animated episode."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agents.evaluation import EvaluationResult
from ram_env.canvas import compose_numpy
from ram_env.render import PATH_COLOUR, draw_episode, step_colours
from ram_env.task import Task


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def canvas_of(task: Task, index: int) -> np.ndarray:
    """The fixed (validation/test) canvas of image ``index``: ``(C, H, W)`` uint8."""
    return compose_numpy(task.data.images, task.fixed_layout, task.config.canvas, index)


def plot_confusion(result: EvaluationResult, n_classes: int, path: Path, title: str) -> Path:
    plt = _pyplot()
    matrix = result.confusion(n_classes)
    fig, ax = plt.subplots(figsize=(6, 5))
    shown = np.log1p(matrix) if n_classes > 20 else matrix
    im = ax.imshow(shown, cmap="Blues")
    ax.set_xlabel("predicted class (Monte Carlo)")
    ax.set_ylabel("true class")
    ax.set_title(title)
    if n_classes <= 20:
        for (i, j), v in np.ndenumerate(matrix):
            if v:
                ax.text(j, i, str(v), ha="center", va="center", fontsize=6, color="black" if i != j else "white")
        ax.set_xticks(range(n_classes))
        ax.set_yticks(range(n_classes))
    fig.colorbar(im, ax=ax, label="log(1 + count)" if n_classes > 20 else "count")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def glimpse_grid_figure(result: EvaluationResult, task: Task, *, count: int = 16, seed: int = 0):
    """The figure of :func:`plot_glimpse_grid` (a matplotlib ``Figure``; the caller closes it)."""
    plt = _pyplot()
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(result.images, size=min(count, result.images), replace=False))
    cols = 4
    rows = -(-len(chosen) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3.2 * rows + 0.9), squeeze=False, layout="constrained")
    for ax in axes.ravel():
        ax.axis("off")
    for ax, i in zip(axes.ravel(), chosen, strict=False):  # more axes than images
        picture = draw_episode(canvas_of(task, int(i)), result.locations[i], task.config.sensor, min_side=128)
        ax.imshow(picture)
        pred = result.predictions_mean_location[i]
        ax.set_title(
            f"#{i}: true {result.labels[i]}, predicted {pred}",
            fontsize=9,
            color="k" if pred == result.labels[i] else "r",
        )
    steps = result.locations.shape[1]
    first = "random" if task.config.initial_location == "random" else "the centre"
    fig.suptitle(
        f"Glimpse paths at the policy's mean locations (deterministic, not sampled); glimpse 1 at {first}.\n"
        "Boxes: every scale of each glimpse; predictions from the mean-location pass (red title: wrong).",
        fontsize=10,
    )
    handles: list[Patch | Line2D] = [
        Patch(
            facecolor="none",
            edgecolor=colour / 255,
            linewidth=2,
            label=f"glimpse {t + 1}" + (" (last)" if t == steps - 1 else ""),
        )
        for t, colour in enumerate(step_colours(steps))
    ]
    handles.append(Line2D([], [], color=tuple(PATH_COLOUR / 255), linewidth=2, label="path"))
    # On grey, so that the white glimpse of the palette shows.
    legend = fig.legend(
        handles=handles, loc="outside lower center", ncol=min(len(handles), 8), fontsize=8, facecolor="0.3"
    )
    for text in legend.get_texts():
        text.set_color("white")
    return fig


def plot_glimpse_grid(result: EvaluationResult, task: Task, path: Path, *, count: int = 16, seed: int = 0) -> Path:
    """Sample images with their mean-location glimpse paths (boxes at all scales; the last glimpse in red), a
    legend of the glimpse colours, and a title saying the locations are the policy's means."""
    plt = _pyplot()
    fig = glimpse_grid_figure(result, task, count=count, seed=seed)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def save_episode_gif(result: EvaluationResult, task: Task, index: int, path: Path) -> Path:
    """An animated GIF of one episode: one frame per glimpse, the path growing."""
    from PIL import Image

    canvas = canvas_of(task, index)
    frames = [
        Image.fromarray(draw_episode(canvas, result.locations[index][: t + 1], task.config.sensor))
        for t in range(result.locations.shape[1])
    ]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=600, loop=0)
    return path


def plot_training_curve(
    histories: dict[str, list[dict]],
    path: Path,
    *,
    title: str = "",
    ylabel: str = "validation error, % (mean locations)",
) -> Path:
    """Validation error (mean locations, log scale) against wall-clock minutes, one line per run."""
    series = {
        label: ([r["wall_time"] / 60 for r in history], [r["val_error_mean_location"] for r in history])
        for label, history in histories.items()
    }
    xlabel = "wall time (minutes, training + per-epoch validation)"
    return _error_curves(series, path, xlabel=xlabel, ylabel=ylabel, title=title, guides=(2.0, 1.0))


def plot_time_to_accuracy(curves: dict[str, list[dict]], path: Path, *, title: str = "") -> Path:
    """Validation error (mean locations, log scale) against training seconds, one line per curve of
    :func:`agents.time_to_accuracy.curve_points` points."""
    series = {
        label: ([p["train_seconds"] for p in points], [p["val_error_mean_location"] for p in points])
        for label, points in curves.items()
    }
    xlabel = "training seconds (wall time, validations excluded)"
    return _error_curves(series, path, xlabel=xlabel, ylabel="validation error, % (mean locations)", title=title)


def _error_curves(
    series: dict[str, tuple[list[float], list[float]]],
    path: Path,
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    guides: tuple[float, ...] = (),
) -> Path:
    """Error curves on a log y axis, one line per ``label: (x, y)``, with dashed guide lines at ``guides``."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for label, (x, y) in series.items():
        ax.plot(x, y, marker=".", label=label)
    for level in guides:
        ax.axhline(level, color="grey", lw=0.6, ls="--")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", lw=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_sb3_curves(rows: list[dict], path: Path, *, title: str) -> Path:
    """Validation error (%) against environment steps, one line per run, in one figure (a colour per algorithm, a
    line style per seed; a row's ``label``, if it has one, names its line). ``rows`` are ``benchmarks/bench_sb3.py``'s:
    ``algo``, ``seed`` and ``validation_curve`` (``[environment steps, success rate]`` pairs)."""
    plt = _pyplot()
    algos = list(dict.fromkeys(r["algo"] for r in rows))
    colours = {algo: f"C{i % 10}" for i, algo in enumerate(algos)}
    styles = ("-", "--", ":", "-.")
    fig, ax = plt.subplots(figsize=(9.5, 4.5))
    for r in rows:
        steps = [point[0] for point in r["validation_curve"]]
        errors = [100 * (1 - point[1]) for point in r["validation_curve"]]
        label = r.get("label", f"{r['algo']} (seed {r['seed']})")
        style = styles[(r["seed"] - 1) % len(styles)]
        ax.plot(steps, errors, style, marker="o", color=colours[r["algo"]], label=label)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("validation error (%), deterministic policy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the axes: it hides no curve
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
