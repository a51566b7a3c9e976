"""``benchmarks/bench_sb3.py``: one strict-JSON row per (algorithm, seed) with the three test errors, wall time and
the validation curve; the table and the one-figure learning curves are written beside it."""

from __future__ import annotations

import json

import pytest

from agents.checkpoint import load_checkpoint
from agents.sb3 import load_sb3_model
from benchmarks import bench_sb3

# tests/conftest.py TINY_ENV_ARGS: the tiny task (no data files needed).
TINY_ENV_ARGS = "dataset=tiny,glimpse_size=4,num_scales=2,canvas_size=24"


def test_bench_sb3_writes_one_row_per_run_with_curves(tmp_path):
    results = tmp_path / "results"
    argv = ["--algos", "ppo", "a2c", "--env-args", TINY_ENV_ARGS, "--steps", "200", "--seeds", "1", "2"]
    argv += ["--n-envs", "8", "--glimpses", "2", "--mc-samples", "2", "--max-test-images", "40"]
    argv += ["--runs", str(tmp_path / "runs"), "--results", str(results), "--name", "tiny", "--threads", "1"]
    assert bench_sb3.main(argv) == 0
    data = json.loads((results / "tiny_bench.json").read_text(), parse_constant=_reject)  # strict JSON
    rows = data["rows"]
    assert [(r["algo"], r["seed"]) for r in rows] == [("ppo", 1), ("a2c", 1), ("ppo", 2), ("a2c", 2)]
    for r in rows:
        assert r["env_steps"] >= 200 and r["train_seconds"] > 0 and r["test_images"] == 40
        assert all(0 <= r[k] <= 100 for k in ("error_sampled", "error_mean_location", "error_monte_carlo"))
        steps = [point[0] for point in r["validation_curve"]]
        assert steps == sorted(steps) and steps[-1] <= r["env_steps"]
        # The curve is the evaluations EvalCallback made: its best is the run's best validation success.
        assert max(point[1] for point in r["validation_curve"]) == r["best_val_success"]
    assert data["meta"]["seeds"] == [1, 2]
    table = (results / "tiny_table.md").read_text()
    assert table.count("| ppo |") == 2 and table.count("| a2c |") == 2
    assert (results / "tiny_curves.png").stat().st_size > 1000


def test_bench_sb3_hyperparams_reach_every_run(tmp_path):
    """``--hyperparams`` overrides the algorithm's file for the runs it trains, and the row says which."""
    argv = ["--algos", "ppo", "--env-args", TINY_ENV_ARGS, "--steps", "100", "--n-envs", "4", "--glimpses", "2"]
    argv += ["--mc-samples", "1", "--max-test-images", "8", "--hyperparams", "learning_rate=lin_1e-3,n_epochs=1"]
    argv += ["--runs", str(tmp_path / "runs"), "--results", str(tmp_path), "--name", "hp", "--threads", "1"]
    assert bench_sb3.main(argv) == 0
    row = json.loads((tmp_path / "hp_bench.json").read_text())["rows"][0]
    assert row["hyperparams"] == "learning_rate=lin_1e-3,n_epochs=1"
    model = load_sb3_model(load_checkpoint(tmp_path / "runs" / "ppo__1" / "last.pt"))
    assert model.n_epochs == 1
    assert model.learning_rate(1.0) == 1e-3 and model.learning_rate(0.5) == 5e-4  # the lin_ schedule


def test_bench_sb3_append_adds_seeds_and_refuses_other_settings(tmp_path):
    """``--append`` keeps the earlier invocation's rows (another seed of the same benchmark), replaces a rerun
    (algorithm, seed) pair, and refuses a file made with other settings instead of mixing incomparable rows."""
    base = ["--algos", "ppo", "--env-args", TINY_ENV_ARGS, "--n-envs", "4", "--glimpses", "2", "--mc-samples", "1"]
    base += ["--max-test-images", "8", "--runs", str(tmp_path / "runs"), "--results", str(tmp_path), "--name", "a"]
    base += ["--threads", "1"]
    assert bench_sb3.main([*base, "--steps", "100", "--seeds", "1", "2"]) == 0
    assert bench_sb3.main([*base, "--steps", "100", "--seeds", "2", "3", "--append"]) == 0
    data = json.loads((tmp_path / "a_bench.json").read_text())
    assert [r["seed"] for r in data["rows"]] == [1, 2, 3] and data["meta"]["seeds"] == [1, 2, 3]
    with pytest.raises(SystemExit, match="steps: 100 there, 200 here"):
        bench_sb3.main([*base, "--steps", "200", "--seeds", "4", "--append"])
    assert len(json.loads((tmp_path / "a_bench.json").read_text())["rows"]) == 3  # the file is left as it was


def test_bench_sb3_offpolicy_minutes_stop_the_offpolicy_runs_only(tmp_path):
    """``--offpolicy-minutes``: an off-policy run stops at that wall time (before its steps), an on-policy one not."""
    argv = ["--algos", "ppo", "sac", "--env-args", TINY_ENV_ARGS, "--steps", "48", "--offpolicy-steps", "400"]
    argv += ["--offpolicy-minutes", "1e-6", "--n-envs", "4", "--glimpses", "2", "--mc-samples", "1"]
    argv += ["--max-test-images", "8", "--runs", str(tmp_path / "runs"), "--results", str(tmp_path), "--name", "t"]
    assert bench_sb3.main([*argv, "--threads", "1"]) == 0
    ppo, sac = json.loads((tmp_path / "t_bench.json").read_text())["rows"]
    assert ppo["stopped"] is None and ppo["env_steps"] >= 48
    assert sac["stopped"] == "time limit" and sac["env_steps"] == 4  # one vector step of 4 envs
    assert "| sac | 1 | box | history | 4 (time limit) |" in (tmp_path / "t_table.md").read_text()


def _reject(constant: str):
    raise ValueError(f"not strict JSON: {constant}")


def test_plot_sb3_curves_labels_each_run_with_its_file_overrides_and_draws_one_figure(tmp_path, capsys):
    from benchmarks import plot_sb3_curves

    row = {"seed": 1, "env_steps": 400, "error_mean_location": 12.5, "validation_curve": [[200, 0.5], [400, 0.8]]}
    files = []
    for name, algo, hyperparams in (("a", "ppo", "learning_rate=lin_2e-3"), ("b", "a2c", None)):
        path = tmp_path / f"{name}_bench.json"
        path.write_text(json.dumps({"meta": {}, "rows": [{**row, "algo": algo, "hyperparams": hyperparams}]}))
        files.append(path)
    rows = plot_sb3_curves.labelled_rows(files)
    assert [r["label"] for r in rows] == ["ppo (seed 1, learning_rate=lin_2e-3)", "a2c (seed 1)"]
    out = tmp_path / "all.png"
    plot_sb3_curves.main([*map(str, files), "--out", str(out)])
    assert out.stat().st_size > 1000
    assert "a2c (seed 1): 400 steps, test error 12.50 %" in capsys.readouterr().out


def test_plot_sb3_curves_table_has_one_line_per_setting_with_the_mean_over_its_seeds(tmp_path):
    from benchmarks import plot_sb3_curves

    def row(algo, seed, error, hyperparams=None):
        errors = {"error_sampled": error + 1, "error_mean_location": error, "error_monte_carlo": error - 1}
        base = {"algo": algo, "seed": seed, "hyperparams": hyperparams, "env_steps": 400, "train_seconds": 10 * seed}
        return base | errors | {"env": "RAM/MNIST-v0"}

    rows = [row("ppo", 1, 8.0), row("ppo", 2, 4.0), row("ppo", 1, 30.0, "n_epochs=1"), row("sac", 1, 88.0)]
    rows.append(row("ppo", 1, 70.0) | {"env": "RAM/TranslatedMNIST60-v0"})  # another task: its own line, no target
    table = plot_sb3_curves.summary_table(rows).splitlines()
    assert len(table) == 2 + 4  # header, separator, then ppo, ppo with the override, sac, ppo on Translated 60
    cells = [c.strip() for c in table[2].strip("|").split("|")]
    assert cells[:6] == ["`ppo`", "none", "1, 2", "400", "10-20", "8.00 / 4.00"]
    assert cells[6:] == ["7.00", "**6.00**", "5.00", "2.83", "<= 10"]  # means over seeds; sd of 8 and 4
    assert table[3].startswith("| `ppo` | `n_epochs=1` | 1 |") and table[3].endswith("| - | <= 10 |")
    assert table[4].startswith("| `sac` |") and table[4].endswith("| report |")
    assert "| 70.00 |" in table[5] and table[5].endswith("| report |")


def test_the_readmes_sb3_table_is_the_one_plot_sb3_curves_wrote():
    from pathlib import Path

    from benchmarks import plot_sb3_curves

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    table = (root / "results" / "sb3_shipped_table.md").read_text()
    assert plot_sb3_curves.with_table(readme, table) == readme, (
        "README is out of date: rerun the plot_sb3_curves.py command of its 'Other algorithms' section"
    )
    assert plot_sb3_curves.with_table(f"a\n{plot_sb3_curves.START}\nold\n{plot_sb3_curves.END}\n", "new\n") == (
        f"a\n{plot_sb3_curves.START}\nnew\n{plot_sb3_curves.END}\n"
    )
