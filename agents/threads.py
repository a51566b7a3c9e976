"""How many CPU threads torch uses, chosen once at the entry points (``--threads``).

torch's default is one intra-op thread per core. On a machine whose cores are shared with other processes (another
training run, a test suite, a second job under ``torchrun``) those threads wait for each other at every operation,
and the small matrix products of the RAM agent become many times slower than with one thread (see
``benchmarks/bench_threads.py`` and the README). So the entry points default to ``auto``:

* ``OMP_NUM_THREADS`` when it is set (the user, a cluster scheduler or ``torchrun`` chose already);
* otherwise 1 thread, which never collapses under load and loses little on an idle machine at this model's size.

An explicit ``--threads N`` wins over both.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator

import torch

AUTO = "auto"


def parse_threads(value: str | int | None) -> int | None:
    """``"auto"``/``None`` -> ``None`` (decide later), ``"4"``/``4`` -> ``4``; anything else raises ``ValueError``."""
    if value is None or (isinstance(value, str) and value.strip().lower() == AUTO):
        return None
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"threads must be 'auto' or a positive integer, got {value!r}") from None
    if n < 1:
        raise ValueError(f"threads must be 'auto' or a positive integer, got {value!r}")
    return n


def auto_threads() -> int:
    """The ``auto`` choice: ``$OMP_NUM_THREADS`` when it holds a positive integer, else 1."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env:
        try:
            n = int(env)
        except ValueError:
            n = 0
        if n >= 1:
            return n
        warnings.warn(f"ignoring OMP_NUM_THREADS={env!r} (not a positive integer); using 1 thread", stacklevel=2)
    return 1


def set_threads(threads: str | int | None = AUTO) -> int:
    """Set torch's intra-op and inter-op thread counts; returns the intra-op count now in force.

    :param threads: ``"auto"`` or ``None`` (:func:`auto_threads`), or a positive integer.

    ``torch.set_num_interop_threads`` may be called only once per process and before any inter-op work started;
    when it no longer can, the inter-op count is left as it is (it matters little here: the agent runs no parallel
    inter-op work). When ``OMP_NUM_THREADS`` is unset it is set to the chosen count, so child processes (data
    loaders, subprocess environments) inherit the same choice instead of one thread per core each.
    """
    n = parse_threads(threads)
    if n is None:
        n = auto_threads()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    if torch.get_num_interop_threads() != n:
        try:
            torch.set_num_interop_threads(n)
        except RuntimeError:  # already set, or inter-op work has started: keep the current pool
            pass
    os.environ.setdefault("OMP_NUM_THREADS", str(n))
    return torch.get_num_threads()


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch CPU threads and restore the previous count after
    (evaluation with one thread is bit-for-bit repeatable)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
