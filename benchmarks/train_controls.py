"""Train one of the RAM paper's control models (fc or conv) on whole canvases of a task; write its checkpoint.

    python benchmarks/train_controls.py --task mnist --model fc --minutes 5 --output checkpoints/mnist-fc.pt
    python benchmarks/train_controls.py --task cluttered60 --model conv --minutes 5   # checkpoints/cluttered60-conv.pt

Training canvases are generated afresh as the environment generates them; the epoch with the lowest validation
error is kept. ``python evaluate.py checkpoints/mnist-fc.pt --json out.json`` scores the result. All flags:
``--help`` (the logic is in ``agents/controls.py``).
"""

from __future__ import annotations

import sys

from agents.cli import run_cli


def main(argv: list[str] | None = None) -> int:
    def job() -> None:
        from agents.controls import parse_args, train_control

        train_control(parse_args(argv))

    return run_cli(job)


if __name__ == "__main__":
    sys.exit(main())
