"""benchmarks/glimpse_on_target.py: the shares it reports, on distances whose answer is known."""

from __future__ import annotations

import numpy as np

from benchmarks.glimpse_on_target import summarise


def test_shares_count_steps_after_the_first_and_split_right_from_wrong():
    distances = np.array(
        [
            [0.0, 9.0, 3.0],  # right, on target at t = 2
            [2.0, 9.0, 9.0],  # right, on target only at t = 0 (the random start: does not count as found)
            [9.0, 5.0, 9.0],  # wrong, on target at t = 1
            [9.0, 9.0, 9.0],  # wrong, never
        ]
    )
    correct = np.array([True, True, False, False])
    report = summarise(distances, correct, radius=6.0)
    assert report["on_target_right"] == [1.0, 0.0, 0.5] and report["on_target_wrong"] == [0.0, 0.5, 0.0]
    assert report["ever_on_target"] == 0.5
    assert report["ever_on_target_right"] == 0.5 and report["ever_on_target_wrong"] == 0.5
    assert report["error_if_ever_on_target"] == 0.5 and report["error_if_never_on_target"] == 0.5
