"""Build the paper's tables from checkpoints/manifest.json: results/paper_table.md and the README's section.

    python benchmarks/paper_table.py            # after benchmarks/build_manifest.py

Reads the manifest (this project's figures: test errors as `evaluate.py --mc-samples 10` computes them) and the
published figures below, writes results/paper_table.md and replaces the README between
``<!-- paper-table:start -->`` and ``<!-- paper-table:end -->``. Nothing is evaluated here; the per-row figures
(results/paper/<row>/curve.png and glimpses.png) are written by build_manifest.py and only linked.
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- paper-table:start -->", "<!-- paper-table:end -->"

# ------------------------------------------------------------------------------------------- published figures
# Test error in %, lower is better. None: not reported.
SOURCES = {
    "arxiv_v1": "Mnih, Heess, Graves and Kavukcuoglu, Recurrent Models of Visual Attention, arXiv:1406.6247v1 (2014)",
    "nips": "the same paper in Advances in Neural Information Processing Systems 27 (NIPS 2014)",
    "seed": "the seed implementation: dHonerkamp's TensorFlow 1.8 implementation of RAM (its README)",
    "kevinzakka": "kevinzakka/recurrent-visual-attention (PyTorch; its README)",
    "rmva": "the Torch blog post on RAM (rmva, the Torch rnn package's example)",
    "tfRAM": "slundqui/tfRAM (TensorFlow; its README)",
}
# How slundqui/tfRAM measured the figures above, read from its code at commit 7088fb6 (2018-02-16, the commit that
# added them to its README): what a reader needs to compare them with this project's columns.
TFRAM_PROTOCOL = (
    "slundqui/tfRAM's figures (its code at commit 7088fb6, the one that added them to its README) are sampled-"
    "location errors: each test image is classified 10 times with the location noise (standard deviation 0.1, as "
    "here) left on and the accuracy is averaged over the copies, which is how this table's sampled column is measured"
    " (the sampled error of `evaluate.py --mc-samples 10` is averaged over the 10 episodes of each image), not its "
    "mean-location or Monte Carlo columns. Its training runs 500,001 updates of 32 images, each repeated 10 times "
    "(160 M episodes, 8 to 17 times what the Translated and Cluttered runs here saw); its coarser patches are 12 x 12"
    " crops of the image resized to 1/2, 1/4 and 1/6 of its side (on 100 x 100 the widest covers 75 pixels, ours 96);"
    " its clutter is 8 x 8 pieces of a fixed set of 10,000 training images, alpha-blended, and the test images are "
    "cluttered once."
)

# How kevinzakka/recurrent-visual-attention measured its MNIST figure, read from its code at the commit that added it.
KEVINZAKKA_PROTOCOL = (
    "kevinzakka/recurrent-visual-attention's figure (its README at commit a38ac89, which added it) comes from a test "
    "pass that samples the locations (policy standard deviation 0.05) and, with its default `--M 1`, runs each image "
    "once: a sampled-location error as well."
)
#: Which of this table's columns a source's figures compare with, where its code shows how it measured them.
MEASURED_AS = {"tfRAM": "sampled", "kevinzakka": "sampled"}
TASK_TITLES = {
    "mnist": "MNIST 28 x 28",
    "translated60": "Translated MNIST 60 x 60",
    "cluttered60": "Cluttered MNIST 60 x 60",
    "cluttered100": "Cluttered MNIST 100 x 100",
}


@dataclass(frozen=True)
class Published:
    """One row of the paper's RAM tables: task, glimpses and the published test errors (%)."""

    task: str
    glimpses: int
    arxiv_v1: float | None
    nips: float | None
    seed: float | None
    other: tuple[float, str] | None = None  # (error, key of SOURCES): the best other public figure


PUBLISHED: list[Published] = [
    Published("mnist", 2, 6.27, 3.79, 7.70),
    Published("mnist", 4, 1.73, 1.54, 1.07),
    Published("mnist", 6, 1.29, 1.12, 0.67, (1.21, "kevinzakka")),
    Published("mnist", 7, None, 1.07, None, (0.85, "rmva")),
    Published("translated60", 4, 2.29, 1.54, 2.30, (1.54, "tfRAM")),
    Published("translated60", 6, 1.86, 1.22, 1.63, (1.08, "tfRAM")),
    Published("translated60", 8, 1.84, 1.20, None, (0.94, "tfRAM")),
    Published("cluttered60", 4, None, 4.96, None, (5.15, "tfRAM")),
    Published("cluttered60", 6, None, 4.08, None, (3.33, "tfRAM")),
    Published("cluttered60", 8, 5.23, 4.04, None, (2.63, "tfRAM")),
    Published("cluttered100", 4, 14.95, 9.41, 15.14, (14.86, "tfRAM")),
    Published("cluttered100", 6, 11.58, 8.31, 10.09, (8.3, "tfRAM")),
    Published("cluttered100", 8, 10.83, 8.11, None, (5.9, "tfRAM")),
]


@dataclass(frozen=True)
class PublishedControl:
    """A control of the paper (NIPS 2014): ``kind`` fc, conv or random (random glimpse locations)."""

    task: str
    kind: str
    label: str
    nips: float | None
    glimpses: int | None = None


CONTROLS: list[PublishedControl] = [
    PublishedControl("mnist", "fc", "FC, 2 layers of 256", 1.69),
    PublishedControl("mnist", "conv", "convolutional, 2 layers", 1.21),
    PublishedControl("mnist", "random", "RAM, random glimpses", None, 6),
    PublishedControl("translated60", "fc", "FC, 2 layers of 256", 2.63),
    PublishedControl("translated60", "conv", "convolutional, 2 layers", 1.62),
    PublishedControl("cluttered60", "fc", "FC, 2 layers of 256", None),
    PublishedControl("cluttered60", "conv", "convolutional, 2 layers", 8.09),
    PublishedControl("cluttered60", "random", "RAM, random glimpses", 14.4, 8),
    PublishedControl("cluttered100", "conv", "convolutional, 2 layers", 14.35),
]

# ----------------------------------------------------------------------------------------------------- rendering


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _hardware(text: str) -> str:
    """Shorter hardware text for a table cell."""
    text = re.sub(r" \(\d+ CPUs visible\)", "", text)
    return text.removesuffix(", cpu")


def _training(entry: dict[str, Any]) -> str:
    training = entry["training"]
    parts = []
    if training.get("wall_time_s") is not None:
        budget = training.get("budget_min")
        parts.append(f"{training['wall_time_s'] / 60:.1f} min" + (f" of {budget:g}" if budget else ""))
    if training.get("images_seen") is not None:
        parts.append(f"{training['images_seen'] / 1e6:.2f} M images")
    return ", ".join(parts) + f"; {_hardware(entry['hardware'])}"


def _pick(entries: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Of several checkpoints of one row, the one with the lowest validation error (never chosen on test)."""
    if not entries:
        return None
    return min(entries, key=lambda e: (e["best_val_error"] is None, e["best_val_error"] or 0.0, e["file"]))


def _ram_entries(manifest: dict[str, Any], task: str, glimpses: int, policy: str) -> list[dict[str, Any]]:
    return [
        e
        for e in manifest["entries"]
        if e["kind"] == "ram" and e["task"] == task and e["glimpses"] == glimpses and e["location_policy"] == policy
    ]


def _figure_links(entry: dict[str, Any], prefix: str) -> str:
    links = []
    for key, label in (("curve", "validation curve"), ("glimpses", "glimpse paths")):
        path = entry["figures"].get(key)
        if path:
            links.append(f"[{label}]({prefix}{path})")
    return ", ".join(links)


def ram_table(manifest: dict[str, Any]) -> list[str]:
    """The RAM rows: this project's test errors beside the published ones."""
    lines = [
        "| task | glimpses | this project: mean locations | Monte Carlo (M = 10) | sampled | training to the kept "
        "checkpoint (preset: wall time of budget, images, hardware) | arXiv v1 | NIPS 2014 | seed implementation | "
        "best other public |",
        "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | --- |",
    ]
    known = set()
    rows = [(p.task, p.glimpses, p) for p in PUBLISHED]
    for entry in manifest["entries"]:  # trained rows the paper has no figure for
        if entry["kind"] == "ram" and entry["location_policy"] == "learned":
            key = (entry["task"], entry["glimpses"])
            if key not in {(t, g) for t, g, _ in rows}:
                rows.append((entry["task"], entry["glimpses"], None))
    for task, glimpses, published in rows:
        if (task, glimpses) in known:
            continue
        known.add((task, glimpses))
        entry = _pick(_ram_entries(manifest, task, glimpses, "learned"))
        if entry is None:
            ours = "not trained yet | | | "
        else:
            test = entry["test"]
            ours = (
                f"**{_pct(test['error_mean_location'])}** | {_pct(test['error_monte_carlo'])} | "
                f"{_pct(test['error_sampled'])} | `{entry['row']}`: {_training(entry)}"
            )
        if published is None:
            theirs = "- | - | - | -"
        else:
            other = "-"
            if published.other is not None:
                error, key = published.other
                other = f"{error:.2f} ({key}{', ' + MEASURED_AS[key] if key in MEASURED_AS else ''})"
            theirs = f"{_pct(published.arxiv_v1)} | {_pct(published.nips)} | {_pct(published.seed)} | {other}"
        lines.append(f"| {TASK_TITLES.get(task, task)} | {glimpses} | {ours} | {theirs} |")
    return lines


def controls_table(manifest: dict[str, Any]) -> list[str]:
    """The controls: whole-image fc and conv networks and the RAM agent with random glimpses."""
    lines = [
        "| task | control | this project: test error | training to the kept checkpoint (wall time of budget, images, "
        "hardware) | paper (NIPS 2014) |",
        "| --- | --- | ---: | --- | ---: |",
    ]
    for control in CONTROLS:
        if control.kind == "random":
            candidates = _ram_entries(manifest, control.task, control.glimpses, "random")
            label = f"{control.label} ({control.glimpses})"
        else:
            candidates = [e for e in manifest["entries"] if e["task"] == control.task and e["algo"] == control.kind]
            label = control.label
        entry = _pick(candidates)
        if entry is None:
            ours = "not trained yet | "
        elif control.kind == "random":
            test = entry["test"]
            ours = (
                f"**{_pct(test['error_mean_location'])}** (Monte Carlo {_pct(test['error_monte_carlo'])}) | "
                f"{_training(entry)}"
            )
        else:
            ours = f"**{_pct(entry['test']['error_mean_location'])}** | {_training(entry)}"
        lines.append(f"| {TASK_TITLES.get(control.task, control.task)} | {label} | {ours} | {_pct(control.nips)} |")
    return lines


def figures_list(manifest: dict[str, Any], prefix: str = "") -> list[str]:
    lines = []
    for entry in sorted(manifest["entries"], key=lambda e: e["row"]):
        links = _figure_links(entry, prefix)
        if links:
            lines.append(f"- `{entry['row']}` (`{entry['file']}`): {links}")
    return lines


def render(manifest: dict[str, Any], prefix: str = "") -> str:
    """The tables, the figure links, the notes and the sources as Markdown; ``prefix`` leads every figure path."""
    parts = [
        "Test error in %, on all 10,000 test images, as `python evaluate.py CHECKPOINT --mc-samples 10` computes it "
        "(CPU, one thread, the run's seed): **mean locations** (each glimpse at the policy's mean; the figure to "
        "compare with the paper's), Monte Carlo averaging of M = 10 sampled episodes (Ba et al. 2015, not in the "
        "paper) and sampled locations. Checkpoints, their sha256 and training details: `checkpoints/manifest.json`.",
        "",
        *ram_table(manifest),
        "",
        "Controls (the paper's baselines; the whole-image networks are deterministic, so their three errors are one):",
        "",
        *controls_table(manifest),
        "",
    ]
    figures = figures_list(manifest, prefix)
    if figures:
        parts += ["Figures per row (validation error against wall time; glimpse paths on test images):", "", *figures]
        parts.append("")
    parts += [
        "Public implementations differ in how they build the translated and cluttered canvases (and the papers "
        "do not publish their clutter), so their numbers are not strictly comparable with each other or with "
        "ours. Sources: "
        + "; ".join(f"{key}: {text}" for key, text in SOURCES.items() if key not in ("arxiv_v1", "nips"))
        + f". arXiv v1: {SOURCES['arxiv_v1']}; NIPS 2014: {SOURCES['nips']}.",
        "",
        TFRAM_PROTOCOL + " " + KEVINZAKKA_PROTOCOL,
    ]
    return "\n".join(parts) + "\n"


def replace_region(text: str, body: str) -> str:
    """``text`` with everything between the paper-table markers replaced by ``body``."""
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise SystemExit(f"the README lacks the markers {START} ... {END}")
    return text[: start + len(START)] + "\n" + body + text[end:]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", type=Path, default=REPO_ROOT / "checkpoints/manifest.json")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "results/paper_table.md")
    parser.add_argument("--readme", type=Path, default=REPO_ROOT / "README.md")
    args = parser.parse_args(argv)
    manifest = json.loads(args.manifest.read_text())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # Figure paths in the manifest are relative to the repository root; results/paper_table.md sits in results/.
    title = "# Reproducing the paper's tables\n\nGenerated by `benchmarks/paper_table.py` from the manifest.\n\n"
    args.out.write_text(title + render(manifest, prefix="../"))
    args.readme.write_text(replace_region(args.readme.read_text(), render(manifest)))
    print(f"wrote {args.out} and the README's paper-table section")


if __name__ == "__main__":
    main()
