"""Hard visual attention as reinforcement learning: glimpse classification environments (Mnih et al. 2014).

Importing the package registers the environment ids below (``gym.make("ram_env:RAM/MNIST-v0")`` imports it for
you). Every id has the single env :class:`~ram_env.envs.GlimpseEnv` as its ``entry_point`` and the batched
:class:`~ram_env.vector.GlimpseVectorEnv` as its ``vector_entry_point``; keyword arguments of ``gym.make`` override
the defaults (the fields of :class:`~ram_env.task.TaskConfig`).
"""

from __future__ import annotations

from gymnasium.envs.registration import register, registry

from ram_env.task import TaskConfig

__all__ = ["BENCHMARKS", "TaskConfig", "register_envs"]

# id -> default arguments; the glimpse geometry is the paper's for each benchmark (Mnih et al. 2014).
BENCHMARKS: dict[str, dict] = {
    "RAM/MNIST-v0": dict(dataset="mnist", glimpses=6, glimpse_size=8, num_scales=1),
    "RAM/TranslatedMNIST60-v0": dict(dataset="mnist", canvas_size=60, glimpses=6, glimpse_size=12, num_scales=3),
    "RAM/ClutteredMNIST60-v0": dict(
        dataset="mnist", canvas_size=60, clutter_pieces=4, clutter_size=8, glimpses=6, glimpse_size=12, num_scales=3
    ),
    "RAM/ClutteredMNIST100-v0": dict(
        dataset="mnist", canvas_size=100, clutter_pieces=8, clutter_size=8, glimpses=6, glimpse_size=12, num_scales=4
    ),
    # Omniglot: 105 x 105 characters, 1623 classes (task defined in ram_env.datasets).
    "RAM/Omniglot-v0": dict(dataset="omniglot", glimpses=6, glimpse_size=12, num_scales=3),
    # CIFAR-10: the seed implementation's setting, 4 glimpses of 8 x 8 (3 scales here).
    "RAM/CIFAR10-v0": dict(dataset="cifar10", glimpses=4, glimpse_size=8, num_scales=3),
}


def register_envs() -> None:
    """Register every id of :data:`BENCHMARKS` (idempotent)."""
    for env_id, kwargs in BENCHMARKS.items():
        if env_id in registry:
            continue
        register(
            id=env_id,
            entry_point="ram_env.envs:GlimpseEnv",
            vector_entry_point="ram_env.vector:GlimpseVectorEnv",
            kwargs=kwargs,
            disable_env_checker=False,
        )


register_envs()
