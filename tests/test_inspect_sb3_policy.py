"""benchmarks/inspect_sb3_policy.py: its report describes the deterministic episodes the evaluation scored."""

from __future__ import annotations

import numpy as np

import train_agent
from agents.checkpoint import load_checkpoint
from benchmarks.inspect_sb3_policy import inspect

TINY = ["--env-args", "dataset=tiny,glimpse_size=4,num_scales=2,canvas_size=24", "--glimpses", "2", "--n-envs", "4"]


def test_report_counts_the_classes_of_the_mean_location_pass(tmp_path):
    run = tmp_path / "run"
    argv = ["--algo", "sac", *TINY, "--total-timesteps", "40", "--hyperparams", "learning_starts=8", "--device", "cpu"]
    assert train_agent.main([*argv, "--output", str(run)]) == 0
    report, result = inspect(load_checkpoint(run / "last.pt"), images=24)
    assert report["images"] == result.images == 24
    # The classes named are the deterministic pass's (not the sampled pass's) predictions, image by image in count.
    assert report["classes_named"] == np.bincount(result.predictions_mean_location, minlength=4).tolist()
    assert len(report["next_location"]) == 1 and len(report["class_score_mean"]) == 4
    assert 0.0 <= report["class_score_share_saturated"] <= 1.0
