"""What the entry-point scripts share: user errors become one readable line and a non-zero exit, not a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable

from agents.config import TrainingInterrupted, UserError
from ram_env.datasets import DatasetError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def run_cli(job: Callable[[], None]) -> int:
    """Run ``job``; a :class:`UserError`, :class:`DatasetError` or bad environment argument prints ``error: ...``."""
    try:
        job()
    except (UserError, DatasetError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except (ValueError, TypeError) as err:
        # Raised by environment and data-set constructors for bad arguments; their messages name the fix.
        if _raised_by_project(err):
            print(f"error: {err}", file=sys.stderr)
            return EXIT_USER_ERROR
        raise
    except TrainingInterrupted as err:  # checkpointed on SIGINT/SIGTERM; the message says how to resume
        print(str(err), file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


def _raised_by_project(err: BaseException) -> bool:
    tb = err.__traceback__
    last = None
    while tb is not None:
        last = tb.tb_frame.f_code.co_filename
        tb = tb.tb_next
    return last is not None and any(part in last for part in ("/ram_env/", "/agents/"))
