"""Train a hard-attention agent on a glimpse task.

    python train_agent.py --preset mnist-6g
    python train_agent.py --env RAM/ClutteredMNIST60-v0 --glimpses 8 --epochs 50 --device cuda
    python train_agent.py --resume runs/<run>          # the run's own settings; flags given here override them

``--algo ram`` (default) trains the paper's agent (agents.trainer); any other name is a stable-baselines3 or
sb3-contrib algorithm (agents.sb3). ``--help`` lists every flag. ``--threads`` (default ``auto``: ``$OMP_NUM_THREADS``
if set, else 1) fixes torch's CPU threads before anything runs (agents.threads).
"""

from __future__ import annotations

import sys
from pathlib import Path

from agents.cli import run_cli


def main(argv: list[str] | None = None) -> int:
    from agents.runs import config_from_command_line, is_main_process, stop_on_signals

    def job() -> None:
        config = config_from_command_line(argv)
        if config is None:
            return
        from agents.threads import set_threads

        set_threads(config.threads)
        # SIGINT/SIGTERM: checkpoint at the next update and exit 130 (handlers live here, never in library code).
        with stop_on_signals() as stop:
            if config.algo == "ram":
                from agents.trainer import train

                summary = train(config, stop=stop)
            else:
                from agents.sb3 import train_sb3

                summary = train_sb3(config, stop=stop)
        if is_main_process():
            print(f"run finished: {summary}")
            if summary.get("stopped") == "time limit":
                from agents.config import resume_hint

                last = Path(summary["run_dir"]) / "last.pt"
                print(f"stopped at the time limit; {resume_hint(last)}", file=sys.stderr)

    return run_cli(job)


if __name__ == "__main__":
    sys.exit(main())
