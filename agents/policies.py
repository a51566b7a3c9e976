"""Any checkpoint of this project as something :mod:`agents.evaluation` can score (what ``evaluate.py`` runs).

The RAM agent's checkpoints hold its model arguments and weights; stable-baselines3 checkpoints hold the SB3 model
(scored through ``agents.sb3.SB3Policy``); the paper's whole-image controls (``fc``, ``conv``) are scored by
``agents.controls``. The dispatch on ``payload["algo"]`` lives here, above both, so neither
the evaluation loop nor the SB3 package imports the other's callers.
"""

from __future__ import annotations

import torch

from agents.evaluation import EvaluationResult, evaluate_model, make_report
from agents.ram import RecurrentAttentionModel


def evaluate_checkpoint(
    payload: dict, *, split: str = "test", mc_samples: int = 10, device: str | torch.device = "cpu", seed: int = 0
) -> tuple[EvaluationResult, dict]:
    """Rebuild the agent of a loaded checkpoint and score it on ``split``; returns the result and the JSON report."""
    if payload["algo"] in ("fc", "conv"):  # the paper's whole-image controls: deterministic, one figure
        from agents.controls import evaluate_control_checkpoint

        return evaluate_control_checkpoint(payload, split=split, device=device)
    if payload["algo"] != "ram":
        from agents.sb3.evaluation import evaluate_sb3_checkpoint  # imported here: SB3 is slow to import

        return evaluate_sb3_checkpoint(payload, split=split, mc_samples=mc_samples, device=device, seed=seed)
    model = RecurrentAttentionModel.from_args(payload["model_args"])
    model.load_state_dict(payload["model"])
    model.to(device)
    env_kwargs = {**payload["env_kwargs"], "split": split}
    result = evaluate_model(model, env_kwargs, device=device, mc_samples=mc_samples, seed=seed)
    return result, make_report(payload, result, split, model.n_classes)
