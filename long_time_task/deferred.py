"""A task's finish, sent to PostgreSQL without waiting for the reply.

The worker's last statement for a task is its finish (RUNNING -> FINISHED). Waiting for its reply leaves the
worker process idle for a round trip and the database's commit; with ``acks_late`` and a prefetch of one, the
worker's next task is only fetched after that. So on PostgreSQL with psycopg 3 the finish is sent and flushed,
and its reply is read later: before the next statement on the same connection, whoever sends it (the next
task's claim, a handler's query, a health check), or when the worker process stops.

Nothing is weakened by not waiting. The statement is in the server's hands before the task returns, and
PostgreSQL commits it before it replies: if the worker process dies now, closing its socket still delivers
what it sent, so the server runs and commits it (unless the server is set to cancel the queries of clients
that left, ``client_connection_check_interval``). If the server or the connection fails before the commit,
or the server cancels it, the row stays RUNNING and its lease hands it back, exactly as if the worker had
died before sending. The
statement is the guarded UPDATE that ``LongTimeTaskQuerySet.finish`` runs, so a row that has left RUNNING is
never overwritten. It is sent as an unnamed statement, so it leaves no state in the session (a rollback's
``DEALLOCATE ALL`` or a pooler cannot make it disappear).

What changes is when an error is learned. When the reply is read (while psycopg holds the connection's lock,
so nothing is sent or logged then), an error is only noted; ``settle`` acts on it at the start of the
process's next task, or when the process stops: a result PostgreSQL refuses (SQLSTATE class 22, which
``check_result`` makes very unlikely) becomes the task's ``invalid_result`` failure, any other error runs the
finish again, waiting. If the connection is closed before the reply is read, an error in it is lost and the
task's lease hands it back. Results over ``MAX_DEFERRED_RESULT_BYTES`` are written the ordinary way, and so is
every finish unless connections persist across tasks (``CELERY_DB_REUSE_MAX`` and a ``CONN_MAX_AGE`` other
than 0).
"""

from __future__ import annotations

import collections
import logging
import select
import time
import weakref
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connections

logger = logging.getLogger(__name__)

MAX_DEFERRED_RESULT_BYTES = 256 * 1024


@dataclass(frozen=True)
class Sent:
    """A finish whose reply has not been read yet."""

    db: str
    task_id: int
    attempt: int
    result: Any


@dataclass(frozen=True)
class Outcome:
    """What the reply said, for ``settle`` to act on outside psycopg's lock."""

    sent: Sent
    rows: int | None  # None: an error
    sqlstate: str = ""
    error: str = ""


_pending: weakref.WeakKeyDictionary[Any, Sent] = weakref.WeakKeyDictionary()
_outcomes: collections.deque[Outcome] = collections.deque()


class _Plan:
    """The finish statement in PostgreSQL's placeholders, and its constant parameters as text, worked out
    once per database."""

    def __init__(self, statement: str, params: list[Any], positions: dict[str, list[int]]) -> None:
        if set(positions) != {"task_id", "attempt", "result"}:  # pragma: no cover - FINISH changed
            raise RuntimeError(f"unexpected parameters in the finish statement: {sorted(positions)}")
        self.statement = statement
        self.query = _placeholders(statement).encode()
        self.constants = [_as_text(v) for v in params]
        self.positions = positions

    def texts(self, task_id: int, attempt: int, result: bytes | None) -> list[bytes | None]:
        texts = list(self.constants)
        for index in self.positions["task_id"]:
            texts[index] = str(task_id).encode()
        for index in self.positions["attempt"]:
            texts[index] = str(attempt).encode()
        for index in self.positions["result"]:
            texts[index] = result
        return texts


_plans: dict[str, _Plan] = {}


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
    if connection.vendor != "postgresql" or connection.execute_wrappers:
        return False
    if connection.in_atomic_block or connection.connection is None or not connection.get_autocommit():
        return False
    # Connections that are closed after each task (Celery's default, or CONN_MAX_AGE=0) gain nothing, and
    # would drop the reply unread.
    if not getattr(settings, "CELERY_DB_REUSE_MAX", None) or connection.settings_dict.get("CONN_MAX_AGE") == 0:
        return False
    return hasattr(connection.connection, "pgconn")


def send_finish(db: str, task_id: int, attempt: int, result: Any, result_json: str | None) -> bool:
    """Send the finish of ``task_id``'s attempt ``attempt`` (``result_json``: the result as JSON text, None for
    no result) without waiting. Returns False when it must be written the ordinary way instead."""
    data = result_json.encode() if result_json is not None else None
    if data is not None and len(data) > MAX_DEFERRED_RESULT_BYTES:
        return False
    connection = connections[db]
    settle_connection(connection)
    if not can_defer(connection):
        return False
    plan = _plans.get(db)
    if plan is None:
        from .querysets import FINISH

        plan = _plans[db] = _Plan(*FINISH.template(db, {}))
    texts = plan.texts(task_id, attempt, data)
    raw = connection.connection
    pgconn = raw.pgconn
    started = time.monotonic()
    with connection.wrap_database_errors:
        # Unnamed: nothing stays in the session. PostgreSQL infers each parameter's type from its column.
        pgconn.send_query_params(plan.query, texts)
        _pending[raw] = Sent(db, task_id, attempt, result)
        raw.wait = _waiting_after_reply(raw)  # on this connection object only; removed when the reply is read
        while pgconn.flush():  # 1: more to send (a large result): wait until the socket takes it
            _poll(pgconn.socket, select.POLLOUT)
    if connection.queries_logged:
        sql = f"{plan.statement} -- the finish, sent without waiting for the reply; parameters {texts!r}"
        connection.queries_log.append({"sql": sql, "time": f"{time.monotonic() - started:.3f}"})
    return True


def _poll(fd: int, events: int) -> None:
    poller = select.poll()  # not select.select: no limit on the descriptor's number
    poller.register(fd, events)
    poller.poll(1000)


def _waiting_after_reply(raw: Any) -> Any:
    wait = type(raw).wait

    def wait_after_reply(gen: Any, *args: Any, **kwargs: Any) -> Any:
        settle_raw(raw)
        return wait(raw, gen, *args, **kwargs)

    return wait_after_reply


def settle_raw(raw: Any) -> None:
    """Read the reply of ``raw``'s deferred finish, if any, and note what it said. Runs inside psycopg's own
    calls, under the connection's lock: it sends and logs nothing (``settle`` does, later)."""
    raw.__dict__.pop("wait", None)
    sent = _pending.pop(raw, None)
    if sent is None:
        return
    from psycopg import pq

    pgconn = raw.pgconn
    try:
        while True:
            while pgconn.is_busy():
                _poll(pgconn.socket, select.POLLIN)
                pgconn.consume_input()
            result = pgconn.get_result()
            if result is None:
                return
            if result.status == 1:  # COMMAND_OK
                _outcomes.append(Outcome(sent, int(result.command_tuples or 0)))
            else:
                sqlstate = (result.error_field(pq.DiagnosticField.SQLSTATE) or b"").decode()
                error = (result.error_message or b"").decode(errors="replace").strip()
                _outcomes.append(Outcome(sent, None, sqlstate, error))
    except BaseException as exc:
        # The connection broke, or something interrupted the read (a soft time limit): the reply's state is
        # unknown, so the connection is unusable. Closing it makes the next command fail cleanly (Django then
        # reconnects) instead of "another command is already in progress".
        _outcomes.append(Outcome(sent, None, "", f"the reply was lost: {type(exc).__name__}: {exc}"))
        pgconn.finish()
        if not isinstance(exc, Exception):
            raise


def settle_connection(connection: Any) -> None:
    raw = connection.connection
    if raw is not None and raw in _pending:
        settle_raw(raw)


def settle(db: str = "default") -> None:
    """Read a pending reply on ``db``'s connection, then act on what the replies said: log, record a refused
    result as the task's failure, run a finish that failed for another reason again (waiting, this time).
    Runs at the start of each task, before the periodic connection check, and when the process stops."""
    settle_connection(connections[db])
    while True:
        try:
            outcome = _outcomes.popleft()
        except IndexError:
            return
        try:
            _act_on(outcome)
        except Exception:
            # The database is unreachable now: the row stays RUNNING and its lease hands the task back.
            logger.exception("Could not record the outcome of task %s's finish", outcome.sent.task_id)


def _act_on(outcome: Outcome) -> None:
    if outcome.rows == 1:  # the finish won: the usual case
        return
    from .executor import ErrorCode
    from .models import LongTimeTask

    sent = outcome.sent
    tasks = LongTimeTask.objects.using(sent.db)
    if outcome.rows == 0:
        logger.warning("Task %s finished, but its row had already left RUNNING; result dropped", sent.task_id)
        return
    if outcome.sqlstate.startswith("22"):  # data exception: this result cannot be stored
        logger.error("The database refused the result of task %s: %s", sent.task_id, outcome.error)
        tasks.fail(
            sent.task_id,
            attempt=sent.attempt,
            message="The task returned a result that the database cannot store.",
            code=ErrorCode.INVALID_RESULT,
            traceback=outcome.error,
        )
        return
    logger.warning("The finish of task %s failed (%s); writing it again", sent.task_id, outcome.error)
    if not tasks.finish(sent.task_id, attempt=sent.attempt, result=sent.result):
        logger.warning("Task %s finished, but its row had already left RUNNING; result dropped", sent.task_id)
