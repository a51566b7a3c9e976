"""The algorithms' hyperparameter files (RL Baselines3 Zoo's format): complete, consistent with the algorithm
table, read as the Zoo reads them, and the defaults of ``train_agent.py --algo NAME`` under its explicit flags."""

from __future__ import annotations

import pytest
import torch
import yaml
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

import train_agent
from agents.config import TrainConfig, UserError
from agents.sb3 import ALGORITHMS, GlimpseFeaturesExtractor, algorithm_setup, algorithm_spec
from agents.sb3.hyperparams import hyperparams_file, load_hyperparams, parse_hyperparams, resolve_hyperparams
from ram_env.sb3 import make_sb3_vec_env
from ram_env.wrappers import GlimpseHistory

IDS = ("RAM/MNIST-v0", "RAM/TranslatedMNIST60-v0", "RAM/ClutteredMNIST60-v0", "default")
TINY = dict(dataset="tiny", glimpses=3, glimpse_size=4, num_scales=2)


@pytest.mark.parametrize("algo", sorted(ALGORITHMS))
def test_every_algorithm_has_an_entry_per_benchmark_consistent_with_its_forms(algo):
    table = yaml.safe_load(hyperparams_file(algo).read_text())  # what the Zoo does with -conf
    spec = ALGORITHMS[algo]
    assert set(IDS) <= set(table)
    for env_id in IDS:
        hp = resolve_hyperparams(table[env_id])
        assert hp.env_kwargs["action_form"] == spec.action_form
        # The Zoo's single env gets the history form from the wrapper; this project's vector env from the spec.
        assert (hp.env_wrapper == "ram_env.wrappers.GlimpseHistory") == (spec.observation_form == "history")
        assert hp.n_envs >= 1 and hp.n_timesteps >= 1
        # The policy resolves to a class whose features extractor is the glimpse network.
        venv = make_sb3_vec_env(n_envs=2, observation_form=spec.observation_form, action_form=spec.action_form, **TINY)
        model: BaseAlgorithm = spec.load_class()(hp.policy, venv, device="cpu", **_small(hp.model_kwargs))
        extractors = [m for m in model.policy.modules() if isinstance(m, BaseFeaturesExtractor)]
        assert extractors and all(isinstance(m, GlimpseFeaturesExtractor) for m in extractors)
        venv.close()


def _small(kwargs):
    """Constructor arguments with a replay buffer small enough for a unit test."""
    return {**kwargs, **({"buffer_size": 100} if "buffer_size" in kwargs else {})}


def test_the_file_gives_the_defaults_and_flags_override_it():
    name, spec = algorithm_spec("ppo")
    entry = load_hyperparams(name, "RAM/MNIST-v0")
    setup = algorithm_setup(name, spec, TrainConfig(algo="ppo"))
    assert setup.n_envs == entry["n_envs"] and setup.total_timesteps == int(entry["n_timesteps"])
    assert setup.model_kwargs["n_steps"] == entry["n_steps"]
    rate, given = setup.model_kwargs["learning_rate"], entry["learning_rate"]
    if isinstance(given, str):  # lin_<initial>: SB3 calls the schedule with the progress remaining, 1 -> 0
        initial = float(given.removeprefix("lin_"))
        assert (rate(1.0), rate(0.25), rate(0.0)) == (initial, initial / 4, 0.0)
    else:
        assert rate == given
    flags = TrainConfig(
        algo="ppo",
        n_envs=3,
        total_timesteps=99,
        learning_rate=0.25,
        glimpse_out=7,
        hyperparams="n_steps=5,policy_kwargs=dict(net_arch=[8, 8])",
    )
    setup = algorithm_setup(name, spec, flags)
    assert (setup.n_envs, setup.total_timesteps, setup.model_kwargs["n_steps"]) == (3, 99, 5)
    assert setup.model_kwargs["learning_rate"] == 0.25
    assert setup.model_kwargs["policy_kwargs"]["net_arch"] == [8, 8]
    assert setup.model_kwargs["policy_kwargs"]["features_extractor_kwargs"]["glimpse_out"] == 7
    # Another benchmark reads its own entry; an id without one reads 'default'.
    assert (
        algorithm_setup(name, spec, TrainConfig(algo="ppo", env="RAM/Omniglot-v0")).n_envs
        == (load_hyperparams(name, "default")["n_envs"])
    )


def test_off_policy_buffer_follows_a_small_budget():
    name, spec = algorithm_spec("sac")
    setup = algorithm_setup(name, spec, TrainConfig(algo="sac", total_timesteps=300))
    assert setup.model_kwargs["buffer_size"] == 300 and setup.model_kwargs["learning_starts"] <= 150


def test_hyperparams_parse_brackets_json_and_bad_items():
    assert parse_hyperparams("a=1,b=dict(x=[1, 2], y=3),c=lin_0.001,d=true") == {
        "a": 1,
        "b": "dict(x=[1, 2], y=3)",
        "c": "lin_0.001",
        "d": True,
    }
    with pytest.raises(UserError, match="not key=value"):
        parse_hyperparams("n_epochs")
    with pytest.raises(UserError, match="policy_kwargs"):
        resolve_hyperparams({"n_timesteps": 1, "policy": "MultiInputPolicy", "policy_kwargs": "dict(nope=undefined)"})
    schedule = resolve_hyperparams({"n_timesteps": 1, "policy": "MultiInputPolicy", "learning_rate": "lin_0.5"})
    assert schedule.model_kwargs["learning_rate"](0.5) == 0.25


def test_bad_hyperparams_flag_is_one_line_and_exit_2(tmp_path, capsys):
    run = tmp_path / "run"
    assert train_agent.main(["--algo", "ppo", "--hyperparams", "n_epochs", "--output", str(run)]) == 2
    assert "not key=value" in capsys.readouterr().err and not run.exists()


def test_history_wrapper_is_the_single_env_twin_named_in_the_files():
    assert GlimpseHistory.__module__ + "." + GlimpseHistory.__name__ == "ram_env.wrappers.GlimpseHistory"


def test_env_kwargs_of_the_file_reach_the_environment_and_env_args_win(tmp_path):
    tiny = "dataset=tiny,glimpse_size=4,num_scales=2,canvas_size=24"
    flags = ["--algo", "ppo", "--env-args", tiny, "--total-timesteps", "48", "--n-envs", "4", "--glimpses", "2"]
    flags += ["--hyperparams", 'n_steps=12,batch_size=24,env_kwargs={"action_form": "grid", "grid_size": 3}']
    assert train_agent.main([*flags, "--output", str(tmp_path / "a"), "--device", "cpu"]) == 0
    payload = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    assert payload["env_kwargs"]["grid_size"] == 3
    assert payload["config"]["n_envs"] == 4 and payload["config"]["total_timesteps"] == 48
    flags[3] = tiny + ",grid_size=4"
    assert train_agent.main([*flags, "--output", str(tmp_path / "b"), "--device", "cpu"]) == 0
    assert torch.load(tmp_path / "b" / "last.pt", weights_only=True)["env_kwargs"]["grid_size"] == 4


@pytest.mark.parametrize(("algo", "other"), [("ppo", "box"), ("sac", "grid")])
def test_an_action_form_the_algorithm_does_not_use_is_refused_not_replaced(algo, other, tmp_path, capsys):
    # Before, --env-args action_form=box trained PPO on the grid form without a word.
    run = tmp_path / "run"
    argv = ["--algo", algo, "--env-args", f"dataset=tiny,action_form={other}", "--output", str(run)]
    argv += ["--total-timesteps", "96", "--n-envs", "2"]  # short, should the refusal ever be lost
    assert train_agent.main(argv) == 2
    err = capsys.readouterr().err
    assert f"trains with action_form '{ALGORITHMS[algo].action_form}', not '{other}'" in err and not run.exists()
