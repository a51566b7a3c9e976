"""Validation error against training seconds: train a configuration for a fixed wall time, write the curve.

    python benchmarks/time_to_accuracy.py --preset mnist-6g --seconds 240 --device cpu \
        --json results/time_to_accuracy_mnist_cpu_b128.json
    python benchmarks/time_to_accuracy.py --preset mnist-6g --seconds 240 --device cpu --batch-size 1024 \
        --learning-rate 2.83e-3 --warmup-updates 50 --json results/time_to_accuracy_mnist_cpu_b1024.json \
        --plot-with results/time_to_accuracy_mnist_cpu_b128.json

Every ``train_agent.py`` flag applies (a preset, then overrides). The run is ``agents.trainer.RAMTrainer`` with
``--time-limit`` set from ``--seconds`` and a validation every ``--validate-every-seconds`` (default: ``seconds /
12``) besides the per-epoch one; the x axis excludes the validations' own time. Writes the raw points with the
arguments, hardware, provenance, date and load average as strict JSON, and a PNG (``--png``, default beside the
JSON) that can overlay earlier runs (``--plot-with``). The logic is in ``agents/time_to_accuracy.py``.
"""

from __future__ import annotations

import sys

from agents.cli import run_cli


def main(argv: list[str] | None = None) -> int:
    def job() -> None:
        from agents.time_to_accuracy import main as run

        run(argv)

    return run_cli(job)


if __name__ == "__main__":
    sys.exit(main())
