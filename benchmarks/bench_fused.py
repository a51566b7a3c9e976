"""How much a CPU update at batch 128 could gain from fewer operations: ``RAMTrainer.update`` beside the same update
with its gradient written out by hand.

Usage::

    python benchmarks/bench_fused.py --threads 1 2 --json results/bench_fused_cpu.json
    python benchmarks/bench_fused.py --batch 32 --blocks 2 --updates 20      # a quick look

An update of the paper's MNIST model makes about 2,800 operator calls, half of its time outside the matrix products,
and the obvious guess is that the calls themselves (dispatch, autograd bookkeeping) are what is left to cut.
:func:`fused_update` tests that guess at its limit. It computes what ``RAMTrainer.update`` computes (the same batch,
seeds, loss, clipping, Adam step and schedule) for the model ``train_agent.py`` builds by default on MNIST (linear
glimpse network, ReLU core, tanh-squashed Gaussian location policy, no REINFORCE into the core, fp32), with about half
the operator calls outside the environment (the profiler's counts of both, and of the environment's own, are in the
output):

- the rollout runs without autograd and keeps each glimpse's activations;
- the gradient of the hybrid loss is written out: softmax cross-entropy, REINFORCE through the tanh of the location
  mean, the baseline's squared error;
- backpropagation through the glimpses runs only the core's recurrent product per glimpse; every weight gradient is
  one product over all glimpses at once, and the glimpse network's backward pass is batched over all glimpses too.

It is a measuring device, not a training path (a second copy of the model's calculus would have to follow every
change of the model). Before timing, :func:`check` runs one batch both ways from the same seeds and records how far the
loss and each parameter's gradient differ (``max_relative_gradient_difference``: the largest, over parameters, of the
largest absolute difference divided by the largest absolute autograd gradient).

The two updates then alternate in ``--blocks`` blocks of ``--updates`` updates each (after 5 untimed ones), on one
trainer, so that a change in the machine's load affects both; each figure is the median over blocks.
``products_ms_per_update`` is the bare sequence of the update's matrix products (``bench_peer.matmul_sequence``):
what an update with no overhead at all would cost.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.config import resolve_config
from agents.runs import git_commit, hardware_name, write_json
from agents.trainer import RAMTrainer

try:
    from benchmarks.bench_peer import matmul_sequence
    from benchmarks.bench_train import env_episodes, profile_update
except ModuleNotFoundError:  # run as ``python benchmarks/bench_fused.py``: its own folder is on the path, not the root
    from bench_peer import matmul_sequence  # type: ignore[no-redef]
    from bench_train import env_episodes, profile_update  # type: ignore[no-redef]


def _supported(trainer: RAMTrainer) -> None:
    """Refuse a configuration whose calculus :func:`fused_gradients` does not write out."""
    config, train = trainer.model.config, trainer.config
    unsupported = {
        "core": config.core != "rnn",
        "conv_glimpse": config.conv_glimpse,
        "reinforce_into_core": config.reinforce_into_core,
        "location_policy": config.location_policy != "learned",
        "tanh_mean": not config.tanh_mean,
        "precision": train.precision != "fp32",
        "device": trainer.device.type != "cpu",
        "glimpses": trainer.runner.env.config.glimpses < 2,
    }
    bad = [name for name, flag in unsupported.items() if flag]
    if bad:
        raise SystemExit(f"bench_fused.py writes out the default MNIST model's gradient only; unsupported: {bad}")


@torch.no_grad()
def fused_gradients(trainer: RAMTrainer) -> torch.Tensor:
    """New episodes from the env's generator as it stands, the rollout, and the hybrid loss's gradients written into
    ``.grad`` by hand (what ``RAMTrainer._gradients`` computes with autograd). Returns the loss."""
    model, runner = trainer.model, trainer.runner
    env = runner.env
    what, where = model.glimpse_net.what[1], model.glimpse_net.where[0]
    combine, core = model.glimpse_net.combine, model.core.cell
    location, action, baseline = model.location_net.fc, model.action_net.fc, model.baseline_net.fc
    hidden, g_out, std = what.out_features, combine.out_features, model.config.location_std
    core_g, core_h = core.weight[:, :g_out], core.weight[:, g_out:]  # the columns reading g_t and h_{t-1}

    runner.restart()
    obs, info = runner.obs, runner.info
    n, steps = env.num_envs, env.config.glimpses
    labels = info["label"]
    no_label = torch.zeros(n, dtype=torch.long)
    rho, loc, h_gl, g, h, mu, chosen = [], [], [], [], [], [], []
    logits = h_t = torch.empty(0)
    for t in range(steps):
        x = obs["glimpse"].flatten(1)  # (N, k C g g)
        # [h_g, h_l] in one buffer: the combine layer reads it whole, its backward splits it again.
        hgl = torch.cat(
            [torch.addmm(what.bias, x, what.weight.t()), torch.addmm(where.bias, obs["location"], where.weight.t())], 1
        ).relu_()
        g_t = torch.addmm(combine.bias, hgl, combine.weight.t()).relu_()
        pre = torch.addmm(core.bias, g_t, core_g.t())
        if t > 0:
            pre.addmm_(h_t, core_h.t())
        h_t = pre.relu_()
        for saved, value in ((rho, x), (loc, obs["location"]), (h_gl, hgl), (g, g_t), (h, h_t)):
            saved.append(value)
        if t < steps - 1:
            mu_t = torch.addmm(location.bias, h_t, location.weight.t()).tanh_()
            l_next = mu_t + std * torch.randn(mu_t.shape, generator=trainer.noise)
            mu.append(mu_t)
            chosen.append(l_next)
            act = {"location": l_next.clamp(-1.0, 1.0), "label": no_label}
        else:
            logits = torch.addmm(action.bias, h_t, action.weight.t())
            act = {"location": torch.zeros(n, 2), "label": logits.argmax(1)}
        obs, reward, _, _, info = env.step(act)
    runner.obs, runner.info = obs, info

    H, G, HGL = torch.stack(h), torch.stack(g), torch.stack(h_gl)  # (T, N, hidden), (T, N, g_out), (T, N, 2 hidden)
    X, L = torch.stack(rho), torch.stack(loc)  # (T, N, k C g g), (T, N, 2)
    MU, L_chosen = torch.stack(mu), torch.stack(chosen)  # (T-1, N, 2)
    H_early = H[:-1].flatten(0, 1)  # (T-1 N, hidden): the states the location and baseline networks read
    b = torch.addmm(baseline.bias, H_early, baseline.weight.t()).view(steps - 1, n)  # (T-1, N)
    advantage = reward - b  # (T-1, N)
    log_p = torch.log_softmax(logits, 1)  # (N, classes)
    log_pi = (-((L_chosen - MU) ** 2) / (2 * std**2) - math.log(std) - 0.5 * math.log(2 * math.pi)).sum(-1)
    loss = -log_p.gather(1, labels[:, None]).mean() - (log_pi * advantage).sum(0).mean() + (advantage**2).mean()

    trainer.optimizer.zero_grad(set_to_none=True)
    d_logits = log_p.exp_()  # softmax - one-hot, over N
    d_logits[torch.arange(n), labels] -= 1.0
    d_logits /= n
    action.weight.grad, action.bias.grad = d_logits.t() @ H[-1], d_logits.sum(0)
    d_b = advantage.mul(-2.0 / advantage.numel()).view(1, -1)  # (1, T-1 N): d (b - R)^2 mean / d b
    baseline.weight.grad, baseline.bias.grad = d_b @ H_early, d_b.sum(1)
    # d reinforce / d mu = -adv (l - mu) / (N sigma^2); through tanh: times 1 - mu^2.
    d_z = (L_chosen - MU).mul_(advantage[..., None] * (-1.0 / (n * std**2))).mul_(1 - MU * MU).flatten(0, 1)
    location.weight.grad, location.bias.grad = d_z.t() @ H_early, d_z.sum(0)

    d_pre = torch.empty_like(H)  # (T, N, hidden): gradient at the core's pre-activation, glimpse by glimpse
    d_h = d_logits @ action.weight
    for t in range(steps - 1, -1, -1):
        d_pre[t] = d_h.masked_fill_(H[t] <= 0, 0.0)
        if t > 0:
            d_h = d_pre[t] @ core_h
    d_pre_all = d_pre.flatten(0, 1)  # (T N, hidden)
    core.weight.grad = torch.cat(
        [d_pre_all.t() @ G.flatten(0, 1), d_pre[1:].flatten(0, 1).t() @ H[:-1].flatten(0, 1)], 1
    )
    core.bias.grad = d_pre_all.sum(0)
    d_g = (d_pre_all @ core_g).masked_fill_(G.flatten(0, 1) <= 0, 0.0)  # (T N, g_out)
    combine.weight.grad, combine.bias.grad = d_g.t() @ HGL.flatten(0, 1), d_g.sum(0)
    d_hgl = (d_g @ combine.weight).masked_fill_(HGL.flatten(0, 1) <= 0, 0.0)  # (T N, 2 hidden)
    d_what, d_where = d_hgl[:, :hidden], d_hgl[:, hidden:]
    what.weight.grad, what.bias.grad = d_what.t() @ X.flatten(0, 1), d_what.sum(0)
    where.weight.grad, where.bias.grad = d_where.t() @ L.flatten(0, 1), d_where.sum(0)
    return loss


def fused_update(trainer: RAMTrainer) -> None:
    """``RAMTrainer.update`` with :func:`fused_gradients` in place of the autograd rollout, loss and backward."""
    trainer._seed_batch()
    fused_gradients(trainer)
    torch.nn.utils.clip_grad_norm_(trainer.model.parameters(), trainer.config.max_grad_norm)
    trainer.optimizer.step()
    trainer.scheduler.step()
    trainer.global_step += 1


def check(trainer: RAMTrainer) -> dict[str, float]:
    """One batch both ways from the same seeds: the loss and the largest relative gradient difference."""
    trainer._seed_batch()
    fused_loss = float(fused_gradients(trainer))
    fused = {name: p.grad.clone() for name, p in trainer.model.named_parameters()}
    trainer._seed_batch()
    stats, _ = trainer._gradients()
    worst = max(
        float((fused[name] - p.grad).abs().max() / p.grad.abs().max().clamp(min=1e-12))
        for name, p in trainer.model.named_parameters()
    )
    return {
        "loss_fused": fused_loss,
        "loss_autograd": float(stats["losses/total"]),
        "max_relative_gradient_difference": worst,
    }


def measure(env: str, batch: int, blocks: int, updates: int) -> dict[str, Any]:
    """Check, then alternate blocks of autograd and fused updates on one trainer."""
    with tempfile.TemporaryDirectory() as run_dir:
        config = resolve_config({"env": env, "batch_size": batch, "device": "cpu", "output": run_dir})
        trainer = RAMTrainer(config, progress=False)
        try:
            _supported(trainer)
            agreement = check(trainer)
            updates_of = {"autograd": trainer.update, "fused": lambda: fused_update(trainer)}
            samples: dict[str, list[float]] = {name: [] for name in updates_of}
            for _ in range(blocks):
                for name, update in updates_of.items():
                    for _ in range(5):
                        update()
                    start = time.perf_counter()
                    for _ in range(updates):
                        update()
                    samples[name].append(1e3 * (time.perf_counter() - start) / updates)
            calls = {
                name: profile_update(lambda step, u=update: u())["operator_calls_per_update"]
                for name, update in updates_of.items()
            }
            calls["env"] = profile_update(env_episodes(trainer.runner.env))["operator_calls_per_update"]
        finally:
            trainer.close()
    autograd_ms, fused_ms = (float(np.median(samples[name])) for name in ("autograd", "fused"))
    return {
        **agreement,
        "autograd_ms_per_update": autograd_ms,
        "fused_ms_per_update": fused_ms,
        "speedup": autograd_ms / fused_ms,
        "autograd_operator_calls_per_update": calls["autograd"],
        "fused_operator_calls_per_update": calls["fused"],
        "env_operator_calls_per_update": calls["env"],
        "blocks_ms": samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="RAM/MNIST-v0")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument("--blocks", type=int, default=8, help="alternating blocks per update kind")
    parser.add_argument("--updates", type=int, default=100, help="timed updates per block")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    header = {
        "date": datetime.date.today().isoformat(),
        "device": hardware_name(torch.device("cpu")),
        "arguments": vars(args),
        "torch": str(torch.__version__),
        "git_commit": git_commit(),
        "load_average_before": os.getloadavg(),
    }
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        row = {"threads": threads, **measure(args.env, args.batch, args.blocks, args.updates)}
        row["products_ms_per_update"] = matmul_sequence(args.env, args.batch)["ms_per_update"]
        rows.append(row)
        print(
            f"{threads} thread(s), batch {args.batch}: autograd {row['autograd_ms_per_update']:.2f} ms, fused "
            f"{row['fused_ms_per_update']:.2f} ms ({row['speedup']:.2f}x), products alone "
            f"{row['products_ms_per_update']:.2f} ms; operator calls {row['autograd_operator_calls_per_update']:.0f} "
            f"against {row['fused_operator_calls_per_update']:.0f} (environment "
            f"{row['env_operator_calls_per_update']:.0f}); gradients agree to "
            f"{row['max_relative_gradient_difference']:.1e}"
        )
    header["load_average_after"] = os.getloadavg()
    if args.json:
        write_json(Path(args.json), {**header, "rows": rows})
    else:
        print(json.dumps({**header, "rows": rows})[:2000])


if __name__ == "__main__":
    main()
