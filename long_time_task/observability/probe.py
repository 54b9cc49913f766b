"""The liveness probe of the worker and of beat: was their file touched recently enough?

    python -m long_time_task.observability.probe worker --file /run/ltt/worker.alive --max-age 60
    python -m long_time_task.observability.probe beat --file /run/ltt/beat.alive --max-age 120

Exit status 0 when the file was touched less than ``--max-age`` seconds ago; 1 when it is older, missing or
unreadable; 2 for wrong arguments. One line on standard output says which. The worker's main process touches its
file at every lease heartbeat (the ``WORKER_LIVENESS_FILE`` setting), beat when it starts and whenever it sends a
scheduled task (``BEAT_LIVENESS_FILE``): see ``liveness.py`` and docs/operations.md.

Only the standard library is imported: no Django start-up, no settings, no broker and no database, so a probe
costs one Python start-up and one ``stat`` (``celery inspect ping`` costs a Django start-up and a broker round
trip). The thresholds come from the command line for the same reason.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

WRITERS = {
    "worker": "the worker's main process, at every lease heartbeat",
    "beat": "Celery beat, when it starts and whenever it sends a scheduled task",
}


def file_age(path: str, now: float | None = None) -> float:
    """Seconds since ``path`` was last modified (never negative: a clock set back reads as fresh).
    OSError if it cannot be read."""
    modified = os.stat(path).st_mtime
    return max(0.0, (time.time() if now is None else now) - modified)


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of seconds above zero")
    return value


def parser() -> argparse.ArgumentParser:
    parse = argparse.ArgumentParser(
        prog="python -m long_time_task.observability.probe",
        description="Exit 0 if the process's liveness file was touched within --max-age seconds, else 1.",
    )
    parse.add_argument("process", choices=sorted(WRITERS), help="whose file it is")
    parse.add_argument("--file", required=True, help="the file (LONG_TIME_TASK_WORKER_LIVENESS_FILE or _BEAT_...)")
    parse.add_argument(
        "--max-age",
        required=True,
        type=positive_seconds,
        help="seconds; above the heartbeat interval (worker) or the shortest beat schedule interval (beat)",
    )
    return parse


def check(process: str, path: str, max_age: float) -> tuple[bool, str]:
    """Whether ``path`` is fresh, and the line that says so."""
    try:
        age = file_age(path)
    except FileNotFoundError:
        return False, (
            f"{process}: {path} does not exist: it is touched by {WRITERS[process]}; not started yet, or not set up"
        )
    except OSError as exc:
        return False, f"{process}: cannot read {path}: {exc.strerror or exc}"
    if age > max_age:
        return False, f"{process}: not alive: {path} last touched {age:.1f} s ago (max {max_age:g} s)"
    return True, f"{process}: alive: {path} touched {age:.1f} s ago"


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    alive, line = check(args.process, args.file, args.max_age)
    sys.stdout.write(line + "\n")
    return 0 if alive else 1


if __name__ == "__main__":
    sys.exit(main())
