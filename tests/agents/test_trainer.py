"""Training (agents/trainer.py): the learning-rate schedule the optimizer really follows."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from agents.checkpoint import load_checkpoint, save_checkpoint
from agents.config import TrainConfig, resolve_config
from agents.trainer import lr_factor, train
from ram_env.task import Task, TaskConfig


def test_lr_factor_decays_once_every_lr_decay_steps_updates():
    config = TrainConfig()  # the seed implementation's x0.97 every 1000 updates
    steps = [0, 999, 1000, 1001, 1999, 2000]
    assert [lr_factor(s, config) for s in steps] == pytest.approx([1, 1, 0.97, 0.97, 0.97, 0.97**2], abs=1e-12)


def test_trainer_learning_rate_after_k_updates(tmp_path):
    config = resolve_config(
        dict(
            env_args="dataset=tiny,glimpse_size=4,num_scales=2",
            output=str(tmp_path / "run"),
            device="cpu",
            epochs=1,
            batch_size=8,
            epoch_images=5 * 8,  # 5 updates
            learning_rate=1e-3,
            lr_decay=0.5,
            lr_decay_steps=2,
            hidden_size=16,
            glimpse_hidden=8,
            glimpse_out=16,
        )
    )
    train(config, progress=False)
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["global_step"] == 5
    # Updates 0, 1 ran at 1e-3, updates 2, 3 at 5e-4, update 4 at 2.5e-4; the next one will run at 2.5e-4 too.
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-3 * 0.5**2, rel=1e-12)


def test_lr_factor_warms_up_linearly_then_decays():
    config = TrainConfig(warmup_updates=4, lr_decay=0.5, lr_decay_steps=5)
    steps = [0, 1, 2, 3, 4, 5, 10]
    want = [0.25, 0.5, 0.75, 1, 1, 0.5, 0.25]
    assert [lr_factor(s, config) for s in steps] == pytest.approx(want, abs=1e-12)
    assert lr_factor(0, TrainConfig()) == 1  # no warmup by default


def test_trainer_follows_the_warmup(tmp_path, tiny_run_config):
    # 3 updates with warmup over 4: the optimizer's rate after them is the one update 3 will use, 4/4 of the base.
    config = tiny_run_config(tmp_path / "run", epoch_images=3 * 16, warmup_updates=8, learning_rate=1e-3)
    train(config, progress=False)
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["global_step"] == 3
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-3 * 4 / 8, rel=1e-12)


def test_resume_applies_a_new_learning_rate_schedule_and_weight_decay(tmp_path, tiny_run_config):
    """Before, the optimizer's saved state overrode ``--learning-rate`` given with ``--resume`` (which was reported as
    applied and written to config.json) and a changed decay took effect one update late."""
    run = tmp_path / "run"
    train(tiny_run_config(run, epoch_images=2 * 16, learning_rate=1e-3, lr_decay=0.5, lr_decay_steps=2), progress=False)
    # As a checkpoint written before --weight-decay existed: its Adam state says the decay is coupled (L2).
    state = load_checkpoint(run / "last.pt")
    state["optimizer"]["param_groups"][0]["decoupled_weight_decay"] = False
    save_checkpoint(state, run / "last.pt")
    resumed = tiny_run_config(
        run, resume=str(run), epochs=2, learning_rate=4e-4, lr_decay=0.25, lr_decay_steps=2, weight_decay=0.1
    )
    train(dataclasses.replace(resumed, epoch_images=2 * 16), progress=False)
    group = load_checkpoint(run / "last.pt")["optimizer"]["param_groups"][0]
    # After updates 0-3 the next one (update 4) runs at the new base rate times the new decay, twice.
    assert group["lr"] == pytest.approx(4e-4 * 0.25**2, rel=1e-12)
    assert group["initial_lr"] == 4e-4 and group["weight_decay"] == 0.1 and group["decoupled_weight_decay"] is True


def test_weight_decay_is_decoupled(tmp_path, tiny_run_config):
    """One update with decoupled weight decay ``wd`` at rate ``lr`` ends ``lr * wd * w`` below the same update without
    it (coupled L2 would go through Adam's normalisation and differ by far more)."""
    weights = {}
    for wd in (0.0, 0.5):
        train(
            tiny_run_config(tmp_path / f"wd{wd}", epoch_images=16, learning_rate=1e-3, weight_decay=wd), progress=False
        )
        weights[wd] = load_checkpoint(tmp_path / f"wd{wd}" / "last.pt")["model"]
    for name, plain in weights[0.0].items():
        torch.testing.assert_close(weights[0.5][name] - plain, -1e-3 * 0.5 * plain, atol=1e-6, rtol=0)
    assert any(plain.abs().max() > 0.1 for plain in weights[0.0].values())  # the shrink is large enough to see


@pytest.mark.parametrize(
    "field, value", [("warmup_updates", -1), ("validate_every_seconds", 0.0), ("weight_decay", -0.1)]
)
def test_bad_warmup_weight_decay_or_validation_interval_is_a_user_error(field, value):
    from agents.config import UserError

    with pytest.raises(UserError, match=field.replace("_", "-")):
        resolve_config({field: value})


def test_validate_every_seconds_adds_interval_records(tmp_path, tiny_run_config):
    # A tiny interval validates after every update: 4 updates in one epoch give 3 interval records and the epoch's.
    config = tiny_run_config(tmp_path / "run", epoch_images=4 * 16, validate_every_seconds=1e-6)
    train(config, progress=False)
    history = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert [r["step"] for r in history] == [1, 2, 3, 4]
    assert [r.get("interval", False) for r in history] == [True, True, True, False]
    assert all(r["validation_time"] > 0 for r in history)
    times = [r["train_time"] for r in history]
    assert times == sorted(times)
    # Without the option only the epoch's end validates.
    plain = tiny_run_config(tmp_path / "plain", epoch_images=4 * 16)
    train(plain, progress=False)
    assert len((tmp_path / "plain" / "history.jsonl").read_text().splitlines()) == 1


def test_cifar10_preset_trains_and_evaluates_on_generated_batches(tmp_path, cifar_dir):
    """No CIFAR-10 files are available to the test suite: the preset (LSTM core, convolutional glimpse network,
    3 colour channels) runs end to end on the suite's fake batches in the official pickle format (random pixels)."""
    import evaluate
    import train_agent

    run = tmp_path / "run"
    flags = ["--preset", "cifar10-4g", "--env-args", f"data_dir={cifar_dir},download=false", "--device", "cpu"]
    assert train_agent.main([*flags, "--epochs", "2", "--batch-size", "16", "--output", str(run)]) == 0
    state = load_checkpoint(run / "best.pt")
    assert state["config"]["core"] == "lstm" and state["config"]["conv_glimpse"]
    assert state["model_args"]["glimpse_shape"][:2] == [3, 3]  # 3 scales of 3 colour channels
    assert state["global_step"] > 0 and len(state["history"]) >= 1
    report = tmp_path / "report.json"
    assert evaluate.main([str(run), "--mc-samples", "2", "--json", str(report), "--device", "cpu"]) == 0
    assert json.loads(report.read_text())["episodes"] == len(
        Task(TaskConfig(dataset="cifar10", data_dir=str(cifar_dir), download=False, split="test")).data
    )


class _HostSyncSpy(TorchDispatchMode):
    """Records the operators that would stop a CUDA graph capture: a read of a tensor's value on the host
    (``.item()``, ``bool(t)``), outputs whose shape depends on the data, tensors made from Python data (a
    host-to-device copy on CUDA)."""

    BLOCKING = ("_local_scalar_dense", "nonzero", "masked_select", "unique", "lift_fresh")

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if any(name in str(func) for name in self.BLOCKING):
            self.seen.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("clutter", [0, 3], ids=["translated", "cluttered"])
def test_update_makes_no_host_sync_so_it_can_be_captured(clutter, tmp_path, tiny_run_config):
    from agents.trainer import RAMTrainer

    tiny = tiny_run_config(tmp_path / "run").env_args
    config = tiny_run_config(tmp_path / "run", env_args=f"{tiny},clutter_pieces={clutter},clutter_size=4")
    trainer = RAMTrainer(config, progress=False)
    try:
        trainer.update()  # lazy initialisations (the optimizer's state) happen here, before the capture
        with _HostSyncSpy() as spy:
            trainer.update()
    finally:
        trainer.close()
    assert spy.seen == []


def test_first_mismatch_names_what_differs():
    from agents.trainer import _first_mismatch

    stats = {"losses/total": torch.tensor(1.5), "charts/accuracy": torch.tensor(0.25)}
    grads = [torch.ones(3, 2), torch.zeros(4)]
    same = ({k: v.clone() for k, v in stats.items()}, [g.clone() for g in grads])
    assert _first_mismatch(stats, same[0], grads, same[1]) is None
    assert "losses/total" in str(_first_mismatch({**stats, "losses/total": torch.tensor(1.6)}, stats, grads, grads))
    moved = [grads[0], grads[1] + torch.tensor([0.0, 0.0, 1e-2, 0.0])]
    assert "gradient 1" in str(_first_mismatch(stats, stats, moved, grads))
    assert "missing" in str(_first_mismatch(stats, stats, [grads[0], None], grads))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_captured_update_matches_the_eager_update_on_cuda(tmp_path, tiny_run_config):
    """The CUDA graph path (warm-up, capture, checked replay) trains as the eager path does, update for update."""
    from agents.trainer import GRAPH_WARMUP, RAMTrainer

    stats, weights = {}, {}
    for graph in (False, True):
        trainer = RAMTrainer(tiny_run_config(tmp_path / str(graph), device="cuda", cuda_graph=graph), progress=False)
        try:
            stats[graph] = [{k: float(v) for k, v in trainer.update()[0].items()} for _ in range(GRAPH_WARMUP + 4)]
            weights[graph] = [p.detach().cpu() for p in trainer.model.parameters()]
            assert (trainer.graph is not None) == graph  # captured, and the check against the eager update passed
        finally:
            trainer.close()
    for eager, captured in zip(stats[False], stats[True], strict=True):
        assert captured == pytest.approx(eager, rel=1e-4, abs=1e-6)
    for eager_w, captured_w in zip(weights[False], weights[True], strict=True):
        torch.testing.assert_close(captured_w, eager_w, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("base", ["mnist-6g", "cluttered100-8g", "omniglot-6g"])
def test_gpu_preset_follows_the_large_batch_rule(base):
    """``<preset>-gpu``: batch 1024, learning rate x sqrt(8), and after the warmup the same learning rate as the
    preset at every number of images seen; everything else is the preset's."""
    import dataclasses
    import math

    from agents.config import GPU_BATCH, GPU_WARMUP_UPDATES

    cpu, gpu = resolve_config({"preset": base}), resolve_config({"preset": f"{base}-gpu"})
    k = GPU_BATCH // cpu.batch_size
    assert (gpu.batch_size, gpu.warmup_updates) == (GPU_BATCH, GPU_WARMUP_UPDATES)
    assert gpu.learning_rate == pytest.approx(cpu.learning_rate * math.sqrt(k), rel=1e-3)
    for images in (GPU_WARMUP_UPDATES * GPU_BATCH, 640_000, 5_000_000, 40_000_000):
        assert lr_factor(images // GPU_BATCH, gpu) == pytest.approx(lr_factor(images // cpu.batch_size, cpu))
    assert lr_factor(0, gpu) == pytest.approx(1 / GPU_WARMUP_UPDATES)
    # Decoupled weight decay shrinks the weights by learning rate x weight decay per update: the same per image seen.
    shrink = gpu.learning_rate * gpu.weight_decay / (cpu.learning_rate * cpu.weight_decay or 1)
    assert shrink == pytest.approx(k if cpu.weight_decay else 0, rel=3e-3)  # both rounded to 3 digits
    rule = {"preset", "batch_size", "learning_rate", "lr_decay_steps", "warmup_updates", "weight_decay"}
    assert {k: v for k, v in dataclasses.asdict(gpu).items() if k not in rule} == {
        k: v for k, v in dataclasses.asdict(cpu).items() if k not in rule
    }
