"""stable-baselines3 / sb3-contrib algorithms on the glimpse tasks: training, checkpoints and evaluation.

Modules: :mod:`~agents.sb3.features` (the glimpse network as a features extractor), :mod:`~agents.sb3.auxppo`
(RecurrentPPO with the hybrid loss), :mod:`~agents.sb3.algorithms` (what ``--algo`` builds),
:mod:`~agents.sb3.training` and :mod:`~agents.sb3.evaluation`.

``train_agent.py --algo NAME`` (any name but ``ram``) runs :func:`train_sb3`; ``evaluate.py`` scores the checkpoints
it writes through :func:`evaluate_sb3_checkpoint`. Everything SB3 does is SB3's own machinery: the batched torch env
behind :class:`~ram_env.sb3.SB3VecEnvAdapter` wrapped in ``VecMonitor``, ``EvalCallback`` on the validation split,
TensorBoard logs and SB3's ``rollout/success_rate`` from ``info["is_success"]``.

Which form each algorithm gets (:data:`ALGORITHMS`):

=====================================  ============  ===============  ==================  ==========================
algorithm (``--algo``)                 kind          action form      observation form    policy
=====================================  ============  ===============  ==================  ==========================
``ppo``, ``a2c``, ``trpo``             on-policy     ``grid``         ``history``         GlimpseActorCriticPolicy
``sac``, ``td3``, ``ddpg``, ``tqc``    off-policy    ``box``          ``history``         Glimpse{SAC,TD3,TQC}Policy
``recurrentppo``                       recurrent     ``grid``         ``glimpse``         GlimpseLstmPolicy
``auxppo`` (:class:`AuxiliaryRecurrentPPO`)  recurrent  ``grid``     ``glimpse``         GlimpseLstmPolicy
=====================================  ============  ===============  ==================  ==========================

*Why:* SAC/TD3/DDPG/TQC only accept ``Box`` actions. The on-policy ones get ``grid`` (``MultiDiscrete``) because the
label is a categorical choice: a categorical head names a class directly, while a Gaussian over ``n`` class scores
followed by argmax is a poorly conditioned way to pick one. Feed-forward policies see the ``history`` form (every
glimpse so far), which makes the problem Markov; recurrent ones see one glimpse per step and remember with their
LSTM, as the paper's core network does. Every policy uses :class:`GlimpseFeaturesExtractor` (the paper's glimpse
network). DQN and QR-DQN are not offered: they need a ``Discrete`` action space and the task's action is a tuple.

Hyperparameters live in RL Baselines3 Zoo's YAML format, one file per algorithm in ``agents/sb3/hyperparams/``
(:mod:`~agents.sb3.hyperparams`), read by ``train_agent.py`` (:func:`algorithm_setup`) and by the Zoo alike; the
policies they name are in :mod:`~agents.sb3.policies`. ``--hyperparams`` and explicit flags override the file.
"""

from __future__ import annotations

from agents.sb3.algorithms import (
    ALGORITHMS,
    AlgorithmSetup,
    AlgorithmSpec,
    algorithm_setup,
    algorithm_spec,
    load_sb3_model,
    make_adapter,
    model_to_tensor,
)
from agents.sb3.auxppo import AuxiliaryRecurrentPPO, LabelledRecurrentDictRolloutBuffer
from agents.sb3.evaluation import SB3Policy, evaluate_sb3_checkpoint
from agents.sb3.features import GlimpseFeaturesExtractor
from agents.sb3.training import train_sb3

__all__ = [
    "ALGORITHMS",
    "AlgorithmSpec",
    "AuxiliaryRecurrentPPO",
    "GlimpseFeaturesExtractor",
    "LabelledRecurrentDictRolloutBuffer",
    "SB3Policy",
    "AlgorithmSetup",
    "algorithm_setup",
    "algorithm_spec",
    "evaluate_sb3_checkpoint",
    "load_sb3_model",
    "make_adapter",
    "model_to_tensor",
    "train_sb3",
]
