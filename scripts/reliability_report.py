"""Turn the fault suite's figures (JSON) into docs/reliability.md. Run by `make reliability`."""

from __future__ import annotations

import json
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

HEADER = """# Reliability: the fault-injection suites

Every row is one scenario run against real Celery worker processes, real Redis and real PostgreSQL, with real
faults. Each scenario submits a batch under load, injects its faults, and then judges from the database:

- **lost**: tasks that never ran and never reached a terminal state;
- **stuck**: tasks still `PENDING`, `RUNNING` or `RETRYING` {bound} s after the fault ended;
- **duplicated**: (task, attempt) pairs whose handler ran more than once, plus pairs of attempts of one task
  that ran at the same time (a later attempt started before the earlier one ended), counted by the handler
  itself (it writes a row when it starts and stamps it when it ends);
- **time to recover**: seconds from the end of the fault until every task of the batch was terminal.

Bounds in force (seconds): {bounds}.

Reproduce with `make reliability` (as root, with PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379; the
suites stop, start and empty Redis database 15, restart PostgreSQL and create network namespaces, so run them on a
machine of your own). The same scenarios run in CI as part of `make test`.
"""

SUITES = {
    "faults": """
## One host: processes, Redis and PostgreSQL (`tests/faults`)

Signals to worker processes, Redis stopped or emptied, PostgreSQL restarted.
""",
    "hosts": """
## Across hosts: partitions, a lost host, clocks (`tests/hosts`, `make test-hosts`)

Each host is a network namespace of its own, joined to the services' host by a veth link: a web host (gunicorn)
and worker hosts `w1` (queues `default`, `heavy`), `w2` (`default`, `priority`, `maintenance`) and `w3` (`heavy`,
`priority`, `maintenance`, and beat), so that every queue has consumers on two hosts. A partition takes a host's
link down (packets dropped both ways, as a switch port would); a killed host loses its link and every process
at once; a clock off is the host's wall clock 30 s ahead or behind. How each fault plays out, and what the lease
fence does, is in [docs/deployment.md](deployment.md#several-hosts).
""",
    "brokers": """
## Broker failover (`tests/brokers`)

A Redis master with a replica and three Sentinels, killed or frozen under a steady submit load; RabbitMQ with
quorum queues and a poison message. See [docs/deployment.md](deployment.md#redis-sentinel) and
[Quorum queues](deployment.md#quorum-queues).
""",
}

TABLE = """
| scenario | tasks submitted | faults injected | lost | stuck | duplicated | time to recover (s) | final states |
|---|---|---|---|---|---|---|---|
"""


def main(results_path: str, out_path: str) -> None:
    report = json.loads(Path(results_path).read_text())
    bounds = ", ".join(f"`{k.removeprefix('LONG_TIME_TASK_').lower()}` {v}" for k, v in report["bounds"].items())
    lines = [HEADER.format(bound=report["settle_bound"], bounds=bounds)]
    for suite, intro in SUITES.items():
        results = [r for r in report["results"] if r.get("suite", "faults") == suite]
        if not results:
            continue
        lines += [intro, TABLE]
        for r in results:
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
