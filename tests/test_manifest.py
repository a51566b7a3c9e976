"""checkpoints/manifest.json against the files it lists, and the machinery that writes it and the paper's tables.

The shipped manifest is checked for what it promises: every file exists with the recorded sha256, every entry has
its fields with the right types, and one cheap checkpoint (the MNIST fc control) re-evaluates to the recorded test
errors. Evaluation on the CPU with one torch thread is deterministic, so the figures should agree exactly; the test
allows one image (0.01 percentage points on the 10,000 test images) so that a different CPU, whose vector units may
round a product differently and flip one borderline prediction, does not fail it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from agents.checkpoint import load_checkpoint
from agents.config import PRESETS, preset_of, recipe_of, resolve_config
from agents.controls import ControlConfig, train_control
from agents.manifest import (
    ERROR_KEYS,
    add_entry,
    build_entry,
    check_entry,
    evaluate_for_manifest,
    load_manifest,
    row_name,
    save_manifest,
    sha256_of,
    ship_checkpoint,
    tolerance,
    upsert,
    validate_entry,
)
from agents.policies import evaluate_checkpoint
from benchmarks import paper_table

REPO_ROOT = Path(__file__).resolve().parents[1]
MANIFEST = REPO_ROOT / "checkpoints" / "manifest.json"


def _entries() -> list[dict]:
    assert MANIFEST.is_file(), "checkpoints/manifest.json is missing; build it with benchmarks/build_manifest.py"
    return load_manifest(MANIFEST)["entries"]


# --------------------------------------------------------------------------------------- the shipped manifest


def test_every_listed_file_exists_with_its_recorded_sha256():
    entries = _entries()
    assert entries, "the manifest lists no checkpoint"
    assert len({e["file"] for e in entries}) == len(entries), "a file is listed twice"
    for entry in entries:
        path = REPO_ROOT / entry["file"]
        assert path.is_file(), entry["file"]
        assert path.stat().st_size == entry["bytes"], entry["file"]
        assert sha256_of(path) == entry["sha256"], f"{entry['file']} changed since the manifest was built"
        for figure in entry["figures"].values():
            assert figure is None or (REPO_ROOT / figure).is_file(), figure


def test_every_entry_has_its_fields_with_the_right_types():
    for entry in _entries():
        assert validate_entry(entry) == [], entry["file"]
        assert all(0.0 <= entry["test"][k] <= 100.0 for k in ERROR_KEYS)  # a type check, not a quality bar
        assert len(entry["sha256"]) == 64
        assert "unknown" not in (entry["trained_at"], entry["hardware"]), "give --trained-at and --hardware"
        assert entry["bytes"] < 5 * 2**20, f"{entry['file']} is larger than 5 MiB; ship it stripped"


def test_entries_describe_their_checkpoints():
    for entry in _entries():
        payload = load_checkpoint(REPO_ROOT / entry["file"])
        assert entry["algo"] == payload["algo"] and entry["env_id"] == payload["env_id"]
        assert entry["env_kwargs"] == payload["env_kwargs"] and entry["seed"] == payload["config"]["seed"]
        assert entry["row"] == row_name(payload)
        assert entry["best_val_error"] == pytest.approx(payload["best_val"], abs=1e-4)
        assert "optimizer" not in payload, f"{entry['file']}: ship checkpoints without the optimizer state"
        if entry["kind"] == "control":
            assert entry["glimpses"] is None and entry["test"]["deterministic"]
        else:
            assert entry["glimpses"] == payload["env_kwargs"]["glimpses"] and entry["test"]["mc_samples"] == 10


def test_a_run_is_named_by_the_preset_whose_recipe_it_has():
    """A run of ``--preset cluttered60-6g-gpu --core lstm`` was filed under the row ``cluttered60-6g-gpu``: shipping
    it would have overwritten that row's figures in results/paper/ with another model's."""

    def run(**explicit):
        return dataclasses.asdict(resolve_config(explicit))

    assert preset_of(run(preset="cluttered60-6g-gpu", core="lstm")) == "cluttered60-6g-lstm-gpu"
    assert preset_of(run(preset="translated60-6g-long-gpu", core="lstm")) == "translated60-6g-long-lstm-gpu"
    assert preset_of(run(preset="cluttered100-8g", core="lstm")) == "cluttered100-8g-lstm"
    assert preset_of(run(preset="translated60-8g-gpu", core="lstm")) == "translated60-8g-lstm-gpu"
    # how a run was carried out does not change its recipe
    kept = run(preset="cluttered60-6g-gpu", seed=3, threads="2", time_limit=5.0, checkpoint_every=7, device="cpu")
    assert preset_of(kept) == "cluttered60-6g-gpu"
    assert preset_of(run(preset="mnist-6g", learning_rate=0.01)) == "mnist-6g"  # no preset has it: as recorded
    assert preset_of(run()) is None
    payload = {"algo": "ram", "env_id": "RAM/ClutteredMNIST60-v0", "env_kwargs": {"glimpses": 6}, "model_args": {}}
    assert row_name({**payload, "config": run(preset="cluttered60-6g-gpu", core="lstm")}) == "cluttered60-6g-lstm-gpu"


def test_each_preset_is_exactly_the_recipe_of_its_shipped_checkpoint():
    """A preset changed after its checkpoint was trained (or a run shipped with extra flags) would make ``--preset X``
    train something other than what the table reports. A setting the checkpoint does not record predates its flag and
    took the default; a ``*-random`` row is its preset with the paper's random-location control."""
    for entry in _entries():
        if entry["kind"] != "ram" or entry["preset"] is None:
            continue
        config = load_checkpoint(REPO_ROOT / entry["file"])["config"]
        recipe = recipe_of(PRESETS[entry["preset"]])
        if entry["row"].endswith("-random"):
            recipe["location_policy"] = "random"
        assert recipe_of(config) == recipe, entry["file"]


@pytest.mark.requires_mnist
def test_the_cheapest_checkpoint_reproduces_its_manifest_figures():
    entries = _entries()
    cheapest = min(entries, key=lambda e: (e["task"] != "mnist", e["algo"] != "fc", e["kind"] != "control", e["file"]))
    payload = load_checkpoint(REPO_ROOT / cheapest["file"])
    result, _ = evaluate_for_manifest(payload, mc_samples=cheapest["test"]["mc_samples"])
    assert result.images == cheapest["test"]["images"]
    for key in ERROR_KEYS:
        assert abs(getattr(result, key) - cheapest["test"][key]) <= tolerance(result.images), key


def test_readme_and_results_table_are_generated_from_the_manifest():
    manifest = load_manifest(MANIFEST)
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.index("## Reproducing the paper's tables")
    assert section < readme.index(paper_table.START) < readme.index(paper_table.END) < readme.index("## Reliability")
    assert paper_table.replace_region(readme, paper_table.render(manifest)) == readme, (
        "README is out of date: run python benchmarks/paper_table.py"
    )
    assert paper_table.render(manifest, prefix="../") in (REPO_ROOT / "results" / "paper_table.md").read_text()


# ------------------------------------------------------------------------------------------- the machinery


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    """A repository-like folder holding one tiny fc control under checkpoints/."""
    root = tmp_path_factory.mktemp("repo")
    config = ControlConfig(
        env_args="dataset=tiny", model="fc", max_epochs=2, epoch_images=1280, output=str(root / "checkpoints/a.pt")
    )
    train_control(config, log=False)
    return root


def test_build_entry_check_and_update(tiny_root, tmp_path):
    path = tiny_root / "checkpoints" / "a.pt"
    entry = build_entry(path, root=tiny_root, trained_at="0" * 40, hardware="a test machine")
    assert validate_entry(entry) == []
    assert entry["file"] == "checkpoints/a.pt" and entry["row"] == "mnist-fc" and entry["kind"] == "control"
    provenance = load_checkpoint(path)["provenance"]
    assert entry["trained_at"] == provenance["git_commit"]  # what the checkpoint records wins over the flags
    assert entry["training"]["images_seen"] == entry["training"]["updates"] * 128
    assert (tiny_root / entry["figures"]["curve"]).is_file() and entry["figures"]["glimpses"] is None
    assert check_entry(entry, root=tiny_root) == []

    manifest_path = tmp_path / "manifest.json"
    manifest = upsert(upsert(load_manifest(manifest_path), entry), dict(entry))
    save_manifest(manifest, manifest_path)
    assert len(load_manifest(manifest_path)["entries"]) == 1  # entries are keyed by file

    # Two build_manifest.py runs side by side: each evaluates for minutes between reading the manifest and writing
    # it. The second writer must keep the entry the first one added meanwhile (it once wrote back its stale copy).
    other = {**entry, "file": "checkpoints/b.pt"}
    add_entry(manifest_path, other)
    add_entry(manifest_path, {**entry, "best_epoch": 7})
    saved = {e["file"]: e for e in load_manifest(manifest_path)["entries"]}
    assert set(saved) == {"checkpoints/a.pt", "checkpoints/b.pt"}
    assert saved["checkpoints/a.pt"]["best_epoch"] == 7

    wrong = json.loads(json.dumps(entry))
    wrong["test"]["error_mean_location"] += 2 * tolerance(entry["test"]["images"])
    assert any("error_mean_location" in p for p in check_entry(wrong, root=tiny_root))
    wrong["test"]["images"] = "many"
    assert any("images" in p for p in validate_entry(wrong))


def test_a_changed_file_fails_the_check(tiny_root, tmp_path):
    copy = tiny_root / "checkpoints" / "b.pt"
    copy.write_bytes((tiny_root / "checkpoints" / "a.pt").read_bytes())
    entry = build_entry(copy, root=tiny_root, figures_dir=None)
    copy.write_bytes(copy.read_bytes() + b"\0")
    assert any("sha256" in p for p in check_entry(entry, root=tiny_root, evaluate=False))
    copy.unlink()
    assert any("missing" in p for p in check_entry(entry, root=tiny_root))


def test_shipped_ram_checkpoint_is_smaller_and_scores_the_same(tmp_path):
    from agents.config import resolve_config
    from agents.trainer import train

    config = resolve_config(
        {
            "env_args": "dataset=tiny,glimpse_size=4,num_scales=2,canvas_size=24",
            "output": str(tmp_path / "run"),
            "device": "cpu",
            "epochs": 1,
            "epoch_images": 640,
            "batch_size": 64,
            "hidden_size": 32,
            "glimpse_hidden": 16,
            "glimpse_out": 32,
            "location_policy": "random",
        }
    )
    train(config, progress=False)
    source = tmp_path / "run" / "last.pt"
    target = tmp_path / "repo" / "checkpoints" / "tiny-random.pt"
    ship_checkpoint(source, target)
    shipped, original = load_checkpoint(target), load_checkpoint(source)
    assert "optimizer" not in shipped and shipped["stripped"] == ["optimizer", "scheduler"]
    assert target.stat().st_size < source.stat().st_size
    a, _ = evaluate_checkpoint(shipped, split="validation", mc_samples=2, seed=3)
    b, _ = evaluate_checkpoint(original, split="validation", mc_samples=2, seed=3)
    assert (a.predictions == b.predictions).all() and a.error_sampled == b.error_sampled
    entry = build_entry(target, root=tmp_path / "repo", trained_at="abc1234", hardware="somewhere")
    assert entry["row"] == "mnist-6g-random" and entry["location_policy"] == "random" and entry["glimpses"] == 6
    assert entry["trained_at"] == shipped.get("provenance", {}).get("git_commit", "abc1234")
    assert entry["figures"]["glimpses"] is not None and validate_entry(entry) == []


def test_paper_table_fills_trained_rows_and_marks_the_rest():
    entry = {
        "file": "checkpoints/x.pt",
        "row": "cluttered60-8g",
        "kind": "ram",
        "algo": "ram",
        "task": "cluttered60",
        "glimpses": 8,
        "location_policy": "learned",
        "best_val_error": 3.0,
        "test": {"error_sampled": 4.5, "error_mean_location": 3.25, "error_monte_carlo": 2.75},
        "training": {"wall_time_s": 600.0, "budget_min": 12.0, "images_seen": 1_000_000},
        "hardware": "Some CPU, 1 torch thread (2 CPUs visible), cpu",
        "figures": {"curve": "results/paper/cluttered60-8g/curve.png", "glimpses": None},
    }
    text = paper_table.render({"entries": [entry]})
    row = next(line for line in text.splitlines() if line.startswith("| Cluttered MNIST 60 x 60 | 8 |"))
    assert "**3.25** | 2.75 | 4.50 | `cluttered60-8g`: 10.0 min of 12, 1.00 M images; Some CPU, 1 torch thread" in row
    assert "| 5.23 | 4.04 | - | 2.63 (tfRAM, sampled) |" in row  # tfRAM measured sampled locations
    assert "| MNIST 28 x 28 | 2 | not trained yet |" in text
    assert "[validation curve](results/paper/cluttered60-8g/curve.png)" in text
    marked = f"a\n{paper_table.START}\nold\n{paper_table.END}\nb\n"
    once = paper_table.replace_region(marked, text)
    assert once.startswith("a\n") and once.endswith(f"{paper_table.END}\nb\n") and "old" not in once
    assert paper_table.replace_region(once, text) == once


def test_torch_threads_are_restored_after_evaluation(tiny_root):
    before = torch.get_num_threads()
    evaluate_for_manifest(load_checkpoint(tiny_root / "checkpoints" / "a.pt"))
    assert torch.get_num_threads() == before


def test_a_resumed_runs_budget_is_not_its_last_invocations_time_limit():
    """A run trained 62 minutes, then resumed with --time-limit 80, was listed as '88.1 min of 80'."""
    from agents.manifest import _training_figures

    payload = {
        "algo": "ram",
        "config": {"time_limit": 80.0, "batch_size": 1024},
        "global_step": 10,
        "wall_time": 5286.0,
    }
    assert _training_figures(payload)["budget_min"] == 80.0  # one invocation: its limit is the run's
    resumed = {**payload, "provenance": {"sessions": [{"until_step": 5, "until_wall_time": 3723.0}]}}
    assert _training_figures(resumed)["budget_min"] is None
    assert _training_figures(resumed)["wall_time_s"] == 5286.0 and _training_figures(resumed)["images_seen"] == 10240
