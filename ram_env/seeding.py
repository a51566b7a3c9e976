"""Independent random streams derived from one run seed.

Every consumer of randomness (the training batches, the training location noise, the evaluation's initial locations,
its location noise, a stable-baselines3 policy's action sampling, ...) draws from its own stream, seeded by
:func:`stream_seed` from the run's seed, the consumer's name and optional indices (update, rank). Two consumers
never share a seed, so their draws are independent: seeding the environment and the location noise with the same
number makes the first initial location and the first noise sample correlated (about -0.37 on MNIST's validation
pass with torch's CPU generator).

>>> stream_seed(1, "eval/env") == stream_seed(1, "eval/noise")
False
>>> stream_seed(1, "train/env", 7, 0) == stream_seed(1, "train/env", 7, 0)
True
"""

from __future__ import annotations

import zlib

import numpy as np

__all__ = ["PURPOSES", "stream_seed"]

#: The named streams of this project; a new consumer of randomness adds its name here.
PURPOSES = (
    "train/env",  # training batches: images, canvases, initial locations (per update and rank)
    "train/noise",  # training location noise (per update and rank)
    "eval/env",  # evaluation: initial locations (and canvases of generated splits)
    "eval/noise",  # evaluation: location noise of the sampled pass
    "eval/policy",  # evaluation of stable-baselines3 policies: torch's global generator (action sampling)
    "sb3/env",  # stable-baselines3 training environments
    "bench",  # benchmarks
)


def stream_seed(seed: int, purpose: str, *index: int) -> int:
    """The seed of stream ``purpose`` (one of :data:`PURPOSES`) of a run seeded ``seed``, optionally indexed.

    :param seed: the run's seed (a non-negative integer).
    :param purpose: which consumer the stream feeds.
    :param index: further coordinates of the stream (e.g. the update and the process rank).
    :return: a seed in ``[0, 2**32)`` for ``torch.Generator.manual_seed``, ``env.reset(seed=...)`` or numpy.
    """
    if purpose not in PURPOSES:
        raise ValueError(f"unknown random stream {purpose!r}; add it to ram_env.seeding.PURPOSES")
    if seed < 0 or any(i < 0 for i in index):
        raise ValueError(f"seeds and stream indices must be >= 0, got seed {seed} and index {index}")
    return int(np.random.SeedSequence([int(seed), zlib.crc32(purpose.encode()), *map(int, index)]).generate_state(1)[0])
