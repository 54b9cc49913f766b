"""A task's finish, sent to PostgreSQL without waiting for the reply.

The worker's last statement for a task is its finish (RUNNING -> FINISHED). Waiting for its reply leaves the
worker process idle for a round trip and the database's commit; with ``acks_late`` and a prefetch of one, the
worker's next task is only fetched after that. So on PostgreSQL with psycopg 3 the finish is sent and flushed,
and its reply is read later: before the next statement on the same connection, whoever sends it (the next
task's claim, a handler's query, a health check), or when the worker process stops.

Nothing is weakened by not waiting. The statement is in the server's hands before the task returns: if the
worker process dies now, closing its socket delivers what it sent before the end of the stream, so the server
still runs and commits it. If the server or the connection fails before the commit, the row stays RUNNING and
its lease hands it back, exactly as if the worker had died before sending. The guarded UPDATE is the same one
``LongTimeTaskQuerySet.finish`` runs, so a row that has left RUNNING is never overwritten.

What changes is when a refusal is learned. A finish the server refuses (a result PostgreSQL cannot store, which
``check_result`` makes very unlikely) is recorded as the task's failure when the reply is read, at the start of
the process's next task at the latest; results over ``MAX_DEFERRED_RESULT_BYTES`` are written synchronously.
``LONG_TIME_TASK_DEFERRED_FINISH = False`` turns it off.
"""

from __future__ import annotations

import logging
import select
import time
import weakref
from dataclasses import dataclass
from typing import Any

from django.db import connections

from .conf import conf

logger = logging.getLogger(__name__)

MAX_DEFERRED_RESULT_BYTES = 256 * 1024
STATEMENT_NAME = "ltt_finish_1"


@dataclass(frozen=True)
class Sent:
    """A finish whose reply has not been read yet."""

    task_id: int
    attempt: int


@dataclass(frozen=True)
class Refused:
    """A finish the database refused: recorded as a failure by ``settle``."""

    task_id: int
    attempt: int
    error: str


_pending: weakref.WeakKeyDictionary[Any, Sent] = weakref.WeakKeyDictionary()
_prepared: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
_refused: list[Refused] = []


def _placeholders(statement: str) -> str:
    """Django's ``%s`` placeholders as PostgreSQL's ``$1``, ``$2``...; ``%%`` is a literal ``%``."""
    parts = statement.split("%%")
    number = 0
    out = []
    for part in parts:
        pieces = part.split("%s")
        for i, piece in enumerate(pieces[:-1]):
            number += 1
            pieces[i] = f"{piece}${number}"
        out.append("".join(pieces))
    return "%".join(out)


def _as_text(value: Any) -> bytes | None:
    """A parameter in PostgreSQL's text format."""
    if value is None:
        return None
    if isinstance(value, bool):
        return b"true" if value else b"false"
    if isinstance(value, int):  # psycopg's Int4 is an int whose repr is "Int4(1)"
        return str(int(value)).encode()
    if isinstance(value, float):
        return repr(float(value)).encode()
    return str(value).encode()


def can_defer(connection: Any) -> bool:
    if not conf.DEFERRED_FINISH or not conf.PREPARED_STATEMENTS or connection.vendor != "postgresql":
        return False
    if connection.in_atomic_block or connection.connection is None or not connection.get_autocommit():
        return False
    return hasattr(connection.connection, "pgconn")


def send_finish(db: str, task_id: int, attempt: int, result_json: str | None) -> bool:
    """Send the finish of ``task_id``'s attempt ``attempt`` with ``result_json`` (the result as JSON text, or
    None for no result) without waiting. Returns False when it must be written the ordinary way instead."""
    from .querysets import FINISH

    connection = connections[db]
    if result_json is not None and len(result_json) > MAX_DEFERRED_RESULT_BYTES:
        return False
    settle_connection(connection)
    if not can_defer(connection):
        return False
    raw = connection.connection
    statement, params, positions = FINISH.template(db, {})
    if set(positions) != {"task_id", "attempt", "result"}:  # pragma: no cover - the FINISH statement changed
        return False
    if _prepared.get(raw) != statement:
        with connection.cursor() as cursor:  # once per connection: an ordinary round trip
            cursor.execute(f"PREPARE {STATEMENT_NAME} AS {_placeholders(statement)}")
        _prepared[raw] = statement
    values = list(params)
    for name, value in (("task_id", task_id), ("attempt", attempt)):
        for index in positions[name]:
            values[index] = value
    texts = [_as_text(v) for v in values]
    for index in positions["result"]:
        texts[index] = result_json.encode() if result_json is not None else None
    pgconn = raw.pgconn
    started = time.monotonic()
    with connection.wrap_database_errors:
        pgconn.send_query_prepared(STATEMENT_NAME.encode(), texts)
        while pgconn.flush():  # 1: more to send (a large result); wait until the socket takes it
            select.select([], [pgconn.socket], [], 1.0)
    _pending[raw] = Sent(task_id, attempt)
    # The next command on this connection reads the reply first (see settle_raw).
    raw.wait = _waiting_after_reply(raw)  # an attribute of this connection object only
    if connection.queries_logged:
        sql = f"EXECUTE {STATEMENT_NAME} {texts!r} -- the finish, sent without waiting for the reply"
        connection.queries_log.append({"sql": sql, "time": f"{time.monotonic() - started:.3f}"})
    return True


def _waiting_after_reply(raw: Any) -> Any:
    wait = type(raw).wait

    def wait_after_reply(gen: Any, *args: Any, **kwargs: Any) -> Any:
        settle_raw(raw)
        return wait(raw, gen, *args, **kwargs)

    return wait_after_reply


def settle_raw(raw: Any) -> None:
    """Read the reply of ``raw``'s deferred finish, if any. Runs inside psycopg's own calls (under the
    connection's lock), so it sends nothing: a refusal is only noted here, and recorded by ``settle``."""
    raw.__dict__.pop("wait", None)
    sent = _pending.pop(raw, None)
    if sent is None:
        return
    pgconn = raw.pgconn
    try:
        while True:
            while pgconn.is_busy():
                select.select([pgconn.socket], [], [], 1.0)
                pgconn.consume_input()
            result = pgconn.get_result()
            if result is None:
                return
            if result.status == 1:  # COMMAND_OK
                if int(result.command_tuples or 0) == 0:
                    logger.warning(
                        "Task %s finished, but its row had already left RUNNING; result dropped", sent.task_id
                    )
            else:
                error = (result.error_message or b"").decode(errors="replace").strip()
                logger.error("The database refused the finish of task %s: %s", sent.task_id, error)
                _refused.append(Refused(sent.task_id, sent.attempt, error))
    except Exception as exc:  # the connection broke: the command that follows will say so
        logger.warning(
            "The reply to task %s's finish was lost (%s); if it did not commit, the task's lease hands it back",
            sent.task_id,
            exc,
        )


def settle_connection(connection: Any) -> None:
    raw = connection.connection
    if raw is not None and raw in _pending:
        settle_raw(raw)


def settle(db: str = "default") -> None:
    """Read a pending reply on ``db``'s connection and record the finishes the database refused (at the start
    of each task, and when the worker process stops)."""
    from .executor import ErrorCode
    from .models import LongTimeTask

    settle_connection(connections[db])
    while _refused:
        refused = _refused.pop(0)
        LongTimeTask.objects.fail(
            refused.task_id,
            attempt=refused.attempt,
            message="The task returned a result that the database cannot store.",
            code=ErrorCode.INVALID_RESULT,
            traceback=refused.error,
        )
