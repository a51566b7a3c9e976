"""benchmarks/bench_fused.py: its hand-written gradient of the hybrid loss is autograd's, so its timing is of the
same update; and, the other way round, autograd's gradient of ``hybrid_loss`` is the one derived by hand."""

from __future__ import annotations

import pytest

from agents.trainer import RAMTrainer
from benchmarks import bench_fused


@pytest.fixture
def trainer(tiny_run_config, tmp_path):
    made: list[RAMTrainer] = []

    def make(**overrides) -> RAMTrainer:
        made.append(RAMTrainer(tiny_run_config(tmp_path / str(len(made)), **overrides), progress=False))
        return made[-1]

    yield make
    for t in made:
        t.close()


def test_hand_written_gradient_equals_autograds_on_the_same_batch(trainer):
    t = trainer()
    for _ in range(3):  # away from the initial weights, with a baseline that no longer predicts zero
        t.update()
    agreement = bench_fused.check(t)
    assert agreement["loss_fused"] == pytest.approx(agreement["loss_autograd"], rel=1e-5)
    assert agreement["max_relative_gradient_difference"] < 1e-4


def test_fused_update_steps_the_optimizer_and_schedule_as_update_does(trainer):
    t = trainer()
    before = [p.detach().clone() for p in t.model.parameters()]
    bench_fused.fused_update(t)
    assert t.global_step == 1 and t.scheduler.last_epoch == 1
    assert all((p != b).any() for p, b in zip(t.model.parameters(), before, strict=True))


@pytest.mark.parametrize("override", [{"core": "lstm"}, {"reinforce_into_core": True}, {"glimpses": 1}])
def test_refuses_a_model_whose_gradient_it_does_not_write_out(trainer, override):
    with pytest.raises(SystemExit, match="unsupported"):
        bench_fused._supported(trainer(**override))
