"""Turn the fault suite's figures (JSON) into docs/reliability.md. Run by `make reliability`."""

from __future__ import annotations

import json
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

HEADER = """# Reliability: the fault-injection suite

Every row is one scenario of `tests/faults/`, run against real Celery worker processes, real Redis and real
PostgreSQL, with real faults (signals to worker processes, Redis stopped or emptied, PostgreSQL restarted).
Each scenario submits a batch under load, injects its faults, and then judges from the database:

- **lost**: tasks that never ran and never reached a terminal state;
- **stuck**: tasks still `PENDING`, `RUNNING` or `RETRYING` {bound} s after the fault ended;
- **duplicated**: (task, attempt) pairs whose handler ran more than once, plus pairs of attempts of one task
  that ran at the same time (a later attempt started before the earlier one ended), counted by the handler
  itself (it writes a row when it starts and stamps it when it ends);
- **time to recover**: seconds from the end of the fault until every task of the batch was terminal.

Bounds in force (seconds): {bounds}.

Reproduce with `make reliability` (PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379; the suite stops,
starts and empties Redis database 15 and restarts PostgreSQL, so run it on a machine of your own).
The same scenarios run in CI as part of `make test`.

| scenario | tasks submitted | faults injected | lost | stuck | duplicated | time to recover (s) | final states |
|---|---|---|---|---|---|---|---|
"""


def main(results_path: str, out_path: str) -> None:
    report = json.loads(Path(results_path).read_text())
    bounds = ", ".join(f"`{k.removeprefix('LONG_TIME_TASK_').lower()}` {v}" for k, v in report["bounds"].items())
    lines = [HEADER.format(bound=report["settle_bound"], bounds=bounds)]
    for r in report["results"]:
        states = ", ".join(f"{k} {v}" for k, v in r["states"].items())
        lines.append(
            f"| {r['scenario']} | {r['submitted']} | {r['faults']} | {r['lost']} | {r['stuck']} | "
            f"{r['duplicated']} | {r['recover_seconds']} | {states} |\n"
        )
    lines.append(
        f"\nMeasured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.node() or 'this machine'} "
        f"({platform.machine()}, Python {platform.python_version()}), 2 cores.\n"
    )
    Path(out_path).write_text("".join(lines))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
