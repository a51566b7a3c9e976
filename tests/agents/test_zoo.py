"""RL Baselines3 Zoo trains and replays an algorithm on a glimpse task with this project's hyperparameter file (the
README's ``python -m rl_zoo3.train ... -conf agents/sb3/hyperparams/ppo.yml``), in subprocesses as a user runs it."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("rl_zoo3", reason="rl_zoo3 is not installed (pip install -e '.[zoo]')")

from stable_baselines3 import PPO  # noqa: E402

from agents.sb3 import GlimpseFeaturesExtractor  # noqa: E402
from agents.sb3.hyperparams import hyperparams_file  # noqa: E402
from agents.sb3.policies import GlimpseActorCriticPolicy  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
# The tiny task (tests/conftest.py TINY_ENV_ARGS) in the Zoo's --env-kwargs syntax (values are Python literals).
ENV_KWARGS = ["dataset:'tiny'", "glimpse_size:4", "num_scales:2", "canvas_size:24", "action_form:'grid'"]
SMALL = [
    "n_envs:2",
    "n_steps:32",
    "batch_size:32",
    "policy_kwargs:dict(features_extractor_kwargs=dict(glimpse_out=32))",
]


def _subprocess(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def _run(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", module, "--algo", "ppo", "--env", "RAM/MNIST-v0", "--gym-packages", "ram_env"]
    return _subprocess([*command, *args], cwd)


def _readme_zoo_commands() -> dict[str, list[str]]:
    """The README's Zoo commands as argument lists, keyed by module (``rl_zoo3.train``, ``rl_zoo3.enjoy``)."""
    blocks = re.findall(r"^```bash\n(.*?)^```", README.read_text(encoding="utf-8"), re.MULTILINE | re.DOTALL)
    (block,) = [b for b in blocks if "-m rl_zoo3.train" in b]
    commands = {}
    for line in block.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if words[:2] == ["python", "-m"]:
            commands[words[2]] = words[3:]
    return commands


def _replace(words: list[str], flag: str, value: str) -> list[str]:
    i = words.index(flag)
    return [*words[: i + 1], value, *words[i + 2 :]]


def test_zoo_trains_and_enjoys_ppo_with_the_project_file(tmp_path):
    logs = tmp_path / "logs"
    conf = str(hyperparams_file("ppo"))
    _run(
        "rl_zoo3.train",
        *("-conf", conf, "-f", str(logs), "-n", "128", "--seed", "3"),
        *("--eval-freq", "64", "--eval-episodes", "4", "--n-eval-envs", "1"),
        *("--env-kwargs", *ENV_KWARGS, "--hyperparams", *SMALL),
        cwd=tmp_path,
    )
    run = logs / "ppo" / "RAM-MNIST-v0_1"
    saved = run / "RAM-MNIST-v0.zip"
    assert saved.is_file() and (run / "best_model.zip").is_file() and (run / "evaluations.npz").is_file()
    model = PPO.load(saved, device="cpu")  # the policy and extractor named in the file were used
    assert isinstance(model.policy, GlimpseActorCriticPolicy)
    assert isinstance(model.policy.features_extractor, GlimpseFeaturesExtractor)
    assert model.policy.features_extractor.combine.out_features == 32  # --hyperparams reached the policy
    enjoy = _run(
        "rl_zoo3.enjoy",
        *("-f", str(logs), "--exp-id", "1", "-n", "30", "--no-render", "--deterministic"),
        cwd=tmp_path,
    )
    # 30 steps are 5 episodes of 6 glimpses; the Zoo prints their success rate (is_success from the env).
    assert "5 Episodes" in enjoy.stdout and "Success rate:" in enjoy.stdout


@pytest.mark.requires_mnist
def test_the_readmes_zoo_commands_train_evaluate_and_enjoy_on_mnist(tmp_path):
    # As written in the README, only shorter: one rollout (64 envs x 24 steps), then the Zoo's evaluation, which
    # builds its env from the command line's --env-kwargs alone (dropping them there fails this test).
    commands = _readme_zoo_commands()
    train = _replace(commands["rl_zoo3.train"], "-conf", str(ROOT / "agents/sb3/hyperparams/ppo.yml"))
    short = ["-n", "1536", "--eval-freq", "1536", "--eval-episodes", "6", "--n-eval-envs", "1", "--seed", "3"]
    _subprocess([sys.executable, "-m", "rl_zoo3.train", *train, *short], tmp_path)
    run = tmp_path / "logs" / "ppo" / "RAM-MNIST-v0_1"
    assert (run / "evaluations.npz").is_file() and (run / "RAM-MNIST-v0.zip").is_file()
    enjoy = _replace(commands["rl_zoo3.enjoy"], "-n", "60")
    result = _subprocess([sys.executable, "-m", "rl_zoo3.enjoy", *enjoy], tmp_path)
    assert "10 Episodes" in result.stdout and "Success rate:" in result.stdout
