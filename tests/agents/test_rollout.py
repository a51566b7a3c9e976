"""The rollout loop and the hybrid loss (agents/rollout.py), tested on what :func:`hybrid_loss` itself returns.

* Values: cross-entropy, REINFORCE and the baseline's squared error of a hand-built trajectory, worked out by hand.
* Sign and detached target: ``d loss / d log_pi = -(R - b) / N`` (a positive advantage raises log pi after a
  gradient step) and the REINFORCE term sends nothing into ``b`` (the advantage is a constant).
* Routing: each term, isolated by detaching the trajectory's other tensors, reaches only its networks, and the full
  loss is exactly the sum of the three (no cross-term).
* The trajectory itself: log pi is the Gaussian log-density of the chosen location under the mean of the same step
  (with the configured sigma); reward, labels and index describe the episodes that were played.
"""

from __future__ import annotations

import math

import pytest
import torch

from agents.ram import RAMConfig, RecurrentAttentionModel
from agents.rollout import EpisodeRunner, Trajectory, hybrid_loss, rollout
from ram_env.vector import GlimpseVectorEnv

TINY = {"dataset": "tiny", "glimpses": 4, "glimpse_size": 4, "num_scales": 2, "canvas_size": 24}
NETWORKS = ("glimpse_net", "core", "location_net", "action_net", "baseline_net")


def _small(**overrides) -> RAMConfig:
    return RAMConfig(**{"hidden_size": 16, "glimpse_hidden": 8, "glimpse_out": 16, **overrides})


def _model_and_trajectory(config: RAMConfig, *, num_envs: int = 32, seed: int = 0, **env_kwargs):
    torch.manual_seed(seed)
    env = GlimpseVectorEnv(num_envs, **{**TINY, **env_kwargs})
    model = RecurrentAttentionModel(env.single_observation_space["glimpse"].shape, env.task.n_classes, config)
    traj = rollout(model, EpisodeRunner(env, seed=seed), generator=torch.Generator().manual_seed(seed))
    return model, traj


def _with(traj: Trajectory, live: set[str]) -> Trajectory:
    """``traj`` with ``logits``, ``log_pi`` and ``baseline`` detached except those named in ``live``."""
    parts = {name: getattr(traj, name) for name in ("logits", "log_pi", "baseline")}
    return Trajectory(
        **{**vars(traj), **{name: t if name in live else t.detach() for name, t in parts.items()}},
    )


def _grads(model: RecurrentAttentionModel, loss: torch.Tensor) -> dict[str, list[torch.Tensor]]:
    """The gradient of ``loss`` for every parameter, grouped by the paper's networks (zeros where unreached)."""
    params = [p for name in NETWORKS for p in getattr(model, name).parameters()]
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    out: dict[str, list[torch.Tensor]] = {}
    it = iter(zip(params, grads, strict=True))
    for name in NETWORKS:
        out[name] = [
            torch.zeros_like(p) if g is None else g for p, g in (next(it) for _ in getattr(model, name).parameters())
        ]
    return out


def _reached(grads: dict[str, list[torch.Tensor]]) -> set[str]:
    return {name for name, gs in grads.items() if any(bool(g.abs().sum() > 0) for g in gs)}


# ------------------------------------------------------------------------------------------ hand-built values


def _hand_built(requires_grad: bool = True) -> Trajectory:
    """N = 2 episodes of 3 glimpses (2 location decisions), 3 classes."""
    return Trajectory(
        logits=torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]], requires_grad=requires_grad),
        locations=torch.zeros(2, 3, 2),
        means=torch.zeros(2, 2, 2),
        log_pi=torch.tensor([[-1.0, -2.0], [0.5, 0.0]], requires_grad=requires_grad),
        baseline=torch.tensor([[0.2, 0.4], [0.9, 0.1]], requires_grad=requires_grad),
        reward=torch.tensor([1.0, 0.0]),
        labels=torch.tensor([0, 2]),
        index=torch.tensor([0, 1]),
    )


def test_hybrid_loss_values_on_a_hand_built_trajectory():
    traj = _hand_built()
    loss, stats = hybrid_loss(traj)
    # Cross-entropy: -log softmax of the true class, averaged over the episodes.
    ce = ((math.log(math.exp(2) + 2) - 2) + math.log(math.e + 2)) / 2
    # REINFORCE: -mean_n sum_t log_pi (R - b); advantages (0.8, 0.6) and (-0.9, -0.1).
    reinforce = -((-1.0 * 0.8 - 2.0 * 0.6) + (0.5 * -0.9 + 0.0 * -0.1)) / 2  # 1.225
    mse = (0.8**2 + 0.6**2 + 0.9**2 + 0.1**2) / 4  # 0.455
    assert float(stats["losses/cross_entropy"]) == pytest.approx(ce, abs=1e-6)
    assert float(stats["losses/reinforce"]) == pytest.approx(reinforce, abs=1e-6)
    assert float(stats["losses/baseline_mse"]) == pytest.approx(mse, abs=1e-6)
    assert float(loss.detach()) == pytest.approx(ce + reinforce + mse, abs=1e-6)
    assert float(stats["losses/total"]) == pytest.approx(float(loss.detach()))
    assert float(stats["charts/accuracy"]) == 0.5  # episode 0 right (class 0), episode 1 wrong (1 instead of 2)
    assert float(stats["charts/reward"]) == 0.5 and float(stats["charts/baseline"]) == pytest.approx(0.4)


def test_hybrid_loss_gradients_sign_and_detached_advantage():
    traj = _hand_built()
    loss, _ = hybrid_loss(traj)
    d_logits, d_log_pi, d_baseline = torch.autograd.grad(loss, [traj.logits, traj.log_pi, traj.baseline])
    n, steps = traj.log_pi.shape
    advantage = traj.reward[:, None] - traj.baseline.detach()
    # The REINFORCE sign: the loss falls as log pi rises where the advantage is positive.
    torch.testing.assert_close(d_log_pi, -advantage / n)
    # The baseline gets the squared error's gradient only: R - b is a constant in the REINFORCE term.
    torch.testing.assert_close(d_baseline, 2 * (traj.baseline.detach() - traj.reward[:, None]) / (n * steps))
    onehot = torch.nn.functional.one_hot(traj.labels, 3).float()
    torch.testing.assert_close(d_logits, (torch.softmax(traj.logits.detach(), 1) - onehot) / n)


def test_a_gradient_step_raises_log_pi_where_the_advantage_is_positive():
    traj = _hand_built()
    before = traj.log_pi.detach().clone()
    optimizer = torch.optim.SGD([traj.log_pi], lr=0.1)
    loss, _ = hybrid_loss(traj)
    loss.backward()
    optimizer.step()
    advantage = traj.reward[:, None] - traj.baseline.detach()
    change = traj.log_pi.detach() - before
    assert (change[advantage > 0] > 0).all() and (change[advantage < 0] < 0).all()


# ---------------------------------------------------------------------------------------------------- routing


@pytest.mark.parametrize("core", ["rnn", "lstm"])
def test_each_term_reaches_only_its_networks(core):
    model, traj = _model_and_trajectory(_small(core=core))
    ce = _grads(model, hybrid_loss(_with(traj, {"logits"}))[0])
    reinforce = _grads(model, hybrid_loss(_with(traj, {"log_pi"}))[0])
    mse = _grads(model, hybrid_loss(_with(traj, {"baseline"}))[0])
    # Cross-entropy trains the classifier, core and glimpse networks; never where to look, nor the baseline.
    assert _reached(ce) == {"glimpse_net", "core", "action_net"}
    # REINFORCE trains the location network alone (reinforce_into_core is off).
    assert _reached(reinforce) == {"location_net"}
    # The baseline's squared error trains the baseline alone (its input h_t is detached).
    assert _reached(mse) == {"baseline_net"}


def test_reinforce_into_core_lets_reinforce_reach_the_core_only_through_the_location_network():
    model, traj = _model_and_trajectory(_small(reinforce_into_core=True))
    reinforce = _grads(model, hybrid_loss(_with(traj, {"log_pi"}))[0])
    assert _reached(reinforce) == {"glimpse_net", "core", "location_net"}
    assert _reached(_grads(model, hybrid_loss(_with(traj, {"baseline"}))[0])) == {"baseline_net"}


def test_full_loss_gradient_is_the_three_terms_worked_out_by_hand():
    """Through the model: the gradient of the whole loss is cross-entropy's through the logits, ``-(R - b) / N``
    through log pi and ``2 (b - R) / (N (T-1))`` through the baseline, nothing else (no REINFORCE into ``b``)."""
    model, traj = _model_and_trajectory(_small())
    n, steps = traj.log_pi.shape
    reward, b = traj.reward[:, None], traj.baseline.detach()
    assert float((reward - b).abs().min()) > 0 and float(traj.log_pi.detach().abs().min()) > 0
    onehot = torch.nn.functional.one_hot(traj.labels, model.n_classes).float()
    # A surrogate whose gradient is exactly those constants, routed through the model's graph.
    by_hand = (
        (traj.logits * (torch.softmax(traj.logits.detach(), 1) - onehot) / n).sum()
        + (traj.log_pi * -(reward - b) / n).sum()
        + (traj.baseline * 2 * (b - reward) / (n * steps)).sum()
    )
    full, expected = _grads(model, hybrid_loss(traj)[0]), _grads(model, by_hand)
    for name in NETWORKS:
        for got, want in zip(full[name], expected[name], strict=True):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7, msg=name)


# ------------------------------------------------------------------------------------------------ trajectory


@pytest.mark.parametrize("std", [0.1, 0.3])
def test_log_pi_is_the_log_density_of_each_sampled_location_under_its_own_mean(std):
    """The location noise is one (N, 2) standard normal draw from ``generator`` per decision, ``l_t = mu_t + std
    eps_t``: so ``log pi_t = sum_d (-eps^2 / 2 - log std - log sqrt(2 pi))`` whatever ``mu_t`` is, and the recorded
    mean of step ``t`` is ``l_t - std eps_t``."""
    model, traj = _model_and_trajectory(_small(location_std=std), num_envs=64, seed=5)
    noise = torch.Generator().manual_seed(5)  # the generator _model_and_trajectory gave the rollout
    eps = torch.stack([torch.randn(64, 2, generator=noise) for _ in range(TINY["glimpses"] - 1)], dim=1)
    expected = (-(eps**2) / 2 - math.log(std) - 0.5 * math.log(2 * math.pi)).sum(-1)  # (N, T-1)
    torch.testing.assert_close(traj.log_pi.detach(), expected, rtol=1e-5, atol=1e-5)
    chosen = traj.locations[:, 1:]  # (N, T-1, 2): where glimpses 1 .. T-1 were taken
    inside = (chosen.abs() < 1).all(-1)  # not clipped by the environment: the sampled location itself
    assert inside.float().mean() > 0.5
    torch.testing.assert_close(traj.means.detach()[inside], (chosen - std * eps)[inside], rtol=0, atol=1e-5)


def test_deterministic_rollout_looks_at_the_mean():
    model, _ = _model_and_trajectory(_small(location_std=0.2))
    env = GlimpseVectorEnv(8, initial_location="center", **TINY)
    with torch.no_grad():
        traj = rollout(model, EpisodeRunner(env, seed=3), deterministic=True)
    torch.testing.assert_close(traj.locations[:, 1:], traj.means.clamp(-1, 1))


def test_reward_labels_and_index_describe_the_episodes_played():
    torch.manual_seed(0)
    env = GlimpseVectorEnv(64, **TINY)  # same-step autoreset: after a batch the runner already holds the next one
    model = RecurrentAttentionModel(env.single_observation_space["glimpse"].shape, env.task.n_classes, _small())
    runner = EpisodeRunner(env, seed=2)
    for _ in range(2):
        shown = runner.info["index"].clone()
        with torch.no_grad():
            traj = rollout(model, runner, generator=torch.Generator().manual_seed(0))
        assert torch.equal(traj.index, shown) and not torch.equal(runner.info["index"], shown)
        assert torch.equal(traj.labels, env.labels[shown])
        # The reward is the last step's: 1 exactly where the classifier named the true class.
        assert torch.equal(traj.reward, (traj.logits.argmax(1) == traj.labels).float())
        assert 0 < float(traj.reward.sum()) < 64, "the check needs right and wrong guesses"
        assert traj.log_pi.shape == traj.baseline.shape == (64, TINY["glimpses"] - 1)


@pytest.mark.parametrize("core", ["rnn", "lstm"])
def test_first_step_from_the_zero_state_equals_the_full_core(core):
    # The rollout starts the core from state None, which skips the recurrent product: same state and same gradients
    # (for every parameter and the glimpse vector) as the full cell fed the explicit zero state.
    torch.manual_seed(0)
    model = RecurrentAttentionModel((1, 1, 4, 4), 10, RAMConfig(core=core, glimpse_out=24, hidden_size=16))
    g = torch.randn(5, 24)
    weights = [torch.randn(5, 16) for _ in range(2)]
    results = []
    for state in (None, model.initial_state(5, torch.device("cpu"))):
        g_t = g.clone().requires_grad_()
        new = model.core(g_t, state)
        assert len(new) == (1 if core == "rnn" else 2)
        sum((s * w).sum() for s, w in zip(new, weights[: len(new)], strict=True)).backward()
        # The LSTM's recurrent weights get no gradient at all from the zero state (the full cell gives them zeros).
        grads = [g_t.grad] + [
            torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in model.core.parameters()
        ]
        results.append(([s.detach() for s in new], grads))
        model.zero_grad(set_to_none=True)
    (skipped, skipped_grads), (full, full_grads) = results
    for a, b in zip(skipped + skipped_grads, full + full_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("glimpses", [1, 2])
def test_every_parameter_of_the_lstm_core_gets_a_gradient(glimpses):
    # With one glimpse the rollout feeds the explicit zero state: the zero-state shortcut would leave the recurrent
    # weights without any gradient (None), which DistributedDataParallel refuses as an unused parameter.
    model, traj = _model_and_trajectory(_small(core="lstm"), glimpses=glimpses)
    hybrid_loss(traj)[0].backward()
    assert all(p.grad is not None for p in model.core.parameters())
