"""All SQL of the presence agent, in one place.

State lives in MySQL/MariaDB so that every Kamailio process, every node and
a restarted server see the same truth.  Each Kamailio process is single
threaded and owns one connection, opened lazily after the fork and dropped
on any connection error.  A connection the server closed while it lay idle
(a database restart) is replaced before it carries a request; one lost
while it carried one is replaced and the work run again, once, if nothing
the work sent can have changed the database.  Otherwise a request that
cannot reach the database gets StoreUnavailable at once (the caller answers
500 with Retry-After); the next request tries again, after a short pause
when the server could not be reached, so service resumes by itself.

Every statement is parameterised.  Multi-step changes run in one
transaction, retried when the server reports a deadlock, a lock wait
timeout or (on Galera) a certification failure.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import logging
import os
import secrets
import select
import time
from typing import Callable, TypeVar

from .config import DatabaseUrl
from .subscription import COLUMNS as SUBSCRIPTION_COLUMNS, Subscription

log = logging.getLogger("pa.store")

T = TypeVar("T")

SCHEMA_VERSION = 4

# Errors after which the same transaction may simply be run again.
_RETRY_CODES = {1205, 1213, 1180, 1181, 1047, 1317}
# Server errors that mean the connection or the server is going away.
_GONE_CODES = {1053, 1077, 1078, 1079, 1080, 1152, 1153, 1927, 4031}
# The connection broke under a query (client errors: server gone away, lost
# during the query, lost at reading; server: connection killed, client
# idle too long): a fresh one may do better.
_LOST_CODES = {2006, 2013, 2055, 1927, 4031}
_RETRIES = 3
_MULTI_STATEMENTS = 1 << 16     # CLIENT_MULTI_STATEMENTS of the MySQL protocol


class _Driver:
    """The MySQL client library: mysqlclient (MySQLdb, C) when installed,
    for it costs a fraction of the CPU per query of PyMySQL (pure Python),
    else PyMySQL.  Both speak DB-API 2 with the same parameter style and
    server error codes.  PA_DB_DRIVER=pymysql forces PyMySQL."""

    def __init__(self):
        module = None
        if os.environ.get("PA_DB_DRIVER", "mysqldb") != "pymysql":
            try:
                import MySQLdb as module
            except ImportError:
                module = None
        if module is None:
            import pymysql as module
        self.name = module.__name__
        self.connect = module.connect
        self.Error = module.MySQLError
        self.OperationalError = module.OperationalError
        self.InterfaceError = module.InterfaceError
        self.Cursor = _recording(importlib.import_module(module.__name__ + ".cursors").Cursor)

    def ping(self, conn) -> None:
        if self.name == "pymysql":
            conn.ping(reconnect=False)
        else:
            conn.ping()

    def fileno(self, conn) -> int:
        return conn._sock.fileno() if self.name == "pymysql" else conn.fileno()


def _recording(base):
    """The driver's cursor, remembering the SQL it sent (`sent`): after a
    lost connection, Database.run tells from it whether the work may
    have changed the database.  A subclass, not a wrapper: nothing on the
    path of a query costs more than one list append."""
    class RecordingCursor(base):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.sent: list[str] = []

        def execute(self, query, args=None):
            self.sent.append(query)
            return super().execute(query, args)

        def executemany(self, query, args):
            self.sent.append(query)
            return super().executemany(query, args)
    return RecordingCursor


def may_have_changed(sent: list[str]) -> bool:
    """Whether the statements sent before a connection broke may have
    changed the database: a write outside a transaction commits by
    itself (autocommit), and a COMMIT may have reached the server however
    early the connection broke after it was sent.  Reads, and the
    statements of a transaction whose COMMIT was never sent, change
    nothing: the server rolls such a transaction back with the
    connection.  Statements come as batch() joins them (';' at a line
    end); anything not recognised counts as a change."""
    in_transaction = False
    for text in sent:
        for statement in text.split(";\n"):
            words = statement.split(None, 2)
            verb = words[0].upper() if words else ""
            if verb == "START" and len(words) > 1 and words[1].upper() == "TRANSACTION":
                in_transaction = True
            elif verb == "ROLLBACK":
                in_transaction = False
            elif verb != "SELECT" and not in_transaction or verb == "COMMIT":
                return True
    return False


DRIVER = _Driver()


class StoreUnavailable(Exception):
    """The database cannot be reached or did not answer in time."""


_last_outage_warning = 0.0


def warn_outage(logger: logging.Logger, what: str, error: Exception) -> None:
    """A timer that cannot reach the database says so once every 30 s, not
    at every tick of an outage."""
    global _last_outage_warning
    now = time.monotonic()
    if now - _last_outage_warning >= 30:
        _last_outage_warning = now
        logger.warning("%s paused, database unavailable: %s", what, error)


class DialogResult(enum.Enum):
    OK = "ok"
    UNKNOWN = "unknown"   # no such subscription: 481
    STALE = "stale"       # CSeq not above the last one: 500


class Database:
    """One connection per process, reconnected after failures.

    Not DBUtils (SteadyDB/PersistentDB), though it does the like: SteadyDB
    runs a statement that failed on a lost connection again on a new one
    unless begin() told it of a transaction, and our transactions are
    START TRANSACTION ... COMMIT inside multi-statement batches, so it would
    send an autocommitted write, or a COMMIT, twice.  It finds dead
    connections by pinging (a round trip) where one poll(2) does, and
    Debian 12, whose Python Kamailio embeds, does not package it."""

    def __init__(self, url: DatabaseUrl, timeout: float, pause: float = 1.0,
                 clock: Callable[[], float] = time.monotonic):
        self.url = url
        self.timeout = timeout
        self.pause = pause
        self.clock = clock
        self._conn: object | None = None
        self._pid = 0
        self._failed_at: float | None = None
        self._used_at = 0.0

    def _connect(self) -> object:
        now = self.clock()
        if self._failed_at is not None and now - self._failed_at < self.pause:
            # Fail fast for a moment after a failure, so that an outage costs
            # each request microseconds, not a connect timeout.
            raise StoreUnavailable("database unavailable (recent failure)")
        # Whole seconds: what both drivers (and the C client) accept.
        seconds = max(1, round(self.timeout))
        where = {"unix_socket": self.url.unix_socket} if self.url.unix_socket else {}
        try:
            conn = DRIVER.connect(
                host=self.url.host, port=self.url.port, user=self.url.user,
                password=self.url.password, database=self.url.database, charset="utf8mb4",
                autocommit=True, connect_timeout=seconds, read_timeout=seconds,
                write_timeout=seconds,
                init_command="SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
                # Several statements per round trip (see batch()); values are
                # still escaped one by one, so this opens no injection.
                client_flag=_MULTI_STATEMENTS, **where)
        except DRIVER.Error as e:
            self._failed_at = now
            raise StoreUnavailable(f"cannot connect to {self.url.redacted()}: {e}") from None
        self._failed_at = None
        self._pid = os.getpid()
        self._used_at = now
        self._readable = select.poll()
        self._readable.register(DRIVER.fileno(conn), select.POLLIN | select.POLLPRI)
        return conn

    def connection(self) -> object:
        # Never use a connection inherited across fork(): Kamailio forks its
        # children after mod_init, and a shared socket would mix their queries.
        if self._conn is None or self._pid != os.getpid():
            self._conn = self._connect()
        elif self._closed_by_server() or (self.clock() - self._used_at > 5.0
                                          and not self._answers_ping()):
            self.discard()
            self._conn = self._connect()
        return self._conn

    def _closed_by_server(self) -> bool:
        """Whether the server closed the idle connection (a restart, its
        wait_timeout, a KILL): with no query outstanding there is then
        something to read, its last error or the end of the stream.  One
        poll(2), no round trip, before every use: a request never goes out
        on a connection already known dead."""
        try:
            return bool(self._readable.poll(0))
        except (OSError, ValueError):
            return True

    def _answers_ping(self) -> bool:
        # A connection idle for a while may have lost its server without
        # being told (a host that went down); a ping now is cheaper than
        # failing the request it would carry.
        try:
            DRIVER.ping(self._conn)
            return True
        except DRIVER.Error:
            return False

    def discard(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and self._pid == os.getpid():
            try:
                conn.close()
            except Exception:
                pass

    def run(self, work: Callable[[object], T]) -> T:
        """Run `work(cursor)`; a transaction it begins (with batch()) is
        rolled back on failure, and run again after a deadlock.  When the
        connection breaks under it, the work runs again on a fresh one,
        once, if what it sent cannot have changed the database (see
        may_have_changed) and the server did not merely take too long."""
        rerun = True
        for attempt in range(_RETRIES):
            conn = self.connection()
            started = self.clock()
            cur = None
            try:
                with conn.cursor(DRIVER.Cursor) as cur:
                    result = work(cur)
                self._used_at = self.clock()
                return result
            except DRIVER.OperationalError as e:
                code = e.args[0] if e.args else 0
                if code in _RETRY_CODES:
                    self._rollback(conn)
                    if attempt + 1 < _RETRIES:
                        continue
                    raise StoreUnavailable(f"database busy: {e}") from None
                self.discard()
                if code in _LOST_CODES and rerun and self._may_rerun(cur, started):
                    rerun = False
                    continue
                if code >= 2000 or code in _GONE_CODES:
                    self._pause_after(code, started)
                raise StoreUnavailable(f"database error: {e}") from None
            except (DRIVER.InterfaceError, OSError) as e:
                self.discard()
                if rerun and self._may_rerun(cur, started):
                    rerun = False
                    continue
                self._pause_after(0, started)
                raise StoreUnavailable(f"database connection lost: {e}") from None
            except BaseException:
                self._rollback(conn)
                raise
        raise AssertionError("unreachable")

    def _may_rerun(self, cur, started: float) -> bool:
        """Whether work whose connection broke may run again: nothing it
        sent can have changed the database, and the break was not a read
        timeout (a server that hangs would only hang again)."""
        return (cur is not None and self.clock() - started < self.timeout
                and not may_have_changed(cur.sent))

    def _pause_after(self, code: int, started: float) -> None:
        """Fail fast for a moment when the server is going away or hangs
        (it said so, or did not answer within db_timeout); a connection
        that merely broke is reopened by the next request."""
        going_away = code in _GONE_CODES and code not in _LOST_CODES
        if going_away or self.clock() - started >= self.timeout:
            self._failed_at = self.clock()

    def _rollback(self, conn) -> None:
        try:
            conn.rollback()
        except Exception:
            self.discard()


@dataclasses.dataclass
class Result:
    rowcount: int
    lastrowid: int
    rows: list


def batch(cur, *statements: tuple[str, tuple | list]) -> list[Result]:
    """Several statements in one round trip to the server, their results in
    order.  A round trip costs both processes a wake-up and a context
    switch, more than most of our statements cost the server."""
    cur.execute(";\n".join(sql for sql, _ in statements),
                [value for _, args in statements for value in args])
    results = []
    for i in range(len(statements)):
        if i:
            cur.nextset()
        results.append(Result(cur.rowcount, cur.lastrowid,
                              list(cur.fetchall()) if cur.description else []))
    return results


BEGIN = ("START TRANSACTION", ())
COMMIT = ("COMMIT", ())


_SUB_COLS = ", ".join(SUBSCRIPTION_COLUMNS)
_INSERT_COLS = [c for c in SUBSCRIPTION_COLUMNS if c != "id"]
_INSERT_SUBSCRIPTION = ("INSERT INTO pa_subscription (" + ", ".join(_INSERT_COLS)
                        + ", created_at) VALUES (" + ", ".join(["%s"] * (len(_INSERT_COLS) + 1))
                        + ")")
# A new subscription, in flight until its first NOTIFY is answered, if its
# watcher and its presentity's event have fewer subscriptions than their
# limits (both counts through an index).
_INSERT_LIMITED = ("INSERT INTO pa_subscription (" + ", ".join(_INSERT_COLS)
                   + ", created_at, notify_deadline) SELECT "
                   + ", ".join(["%s"] * (len(_INSERT_COLS) + 2))
                   + " FROM DUAL WHERE (SELECT COUNT(*) FROM pa_subscription WHERE watcher = %s) < %s"
                   " AND (SELECT COUNT(*) FROM pa_subscription WHERE presentity = %s"
                   " AND presence_domain = %s AND event = %s) < %s")
_SUB_COLS_S = ", ".join("s." + c for c in SUBSCRIPTION_COLUMNS)
_N_SUB = len(SUBSCRIPTION_COLUMNS)
_DIALOG = "call_id = %s AND local_tag = %s AND remote_tag = %s"
# FROM and WHERE of a subscription (s), found by its dialog, with its
# presentity's document (d.body).
_DIALOG_WITH_DOCUMENT = (" FROM pa_subscription s LEFT JOIN pa_document d"
                         " ON d.presentity = s.presentity AND d.presence_domain = s.presence_domain"
                         " AND d.event = s.event"
                         " WHERE s.call_id = %s AND s.local_tag = %s AND s.remote_tag = %s")


def _subscription(row) -> Subscription:
    return Subscription(*row[:_N_SUB])


# At most one NOTIFY per subscription is in flight (sql/002): the one with
# CSeq local_cseq, while notify_deadline is not 0.  _NOTIFY_OR_DIRTY, in the
# UPDATE of a change, reserves the CSeq of the NOTIFY that tells it (and
# puts that NOTIFY in flight until the deadline given as its parameter), or,
# when one is in flight, only marks the subscription dirty: the answer sends
# the newest state.  Each assignment reads only columns assigned after it,
# so it means the same whether the server assigns left to right (MySQL's
# and MariaDB's default) or all at once (SIMULTANEOUS_ASSIGNMENT).
_NOTIFY_OR_DIRTY = ("notify_dirty = (notify_deadline <> 0),"
                    " local_cseq = LAST_INSERT_ID(local_cseq + (notify_deadline = 0)),"
                    " notify_deadline = IF(notify_deadline = 0, %s, notify_deadline)")
# The answer to the NOTIFY in flight (CSeq, Call-ID and tags given): it is
# no longer in flight, unless the subscription is dirty, in which case the
# NOTIFY with the newest state takes its place (CSeq + 1, a new deadline).
_SETTLE = ("UPDATE pa_subscription SET local_cseq = LAST_INSERT_ID(local_cseq + notify_dirty),"
           " notify_deadline = IF(notify_dirty, %s, 0), notify_dirty = 0, notify_retry = 0,"
           " last_notify_code = COALESCE(%s, last_notify_code)"
           " WHERE " + _DIALOG + " AND local_cseq = %s AND notify_deadline <> 0")


def _with_documents(subs: list[Subscription],
                    documents: list) -> list[tuple[Subscription, bytes | None]]:
    """Subscriptions given the CSeq of their next NOTIFY (Store._newest_state),
    each with its presentity's document (rows of Store._select_documents)."""
    bodies = {tuple(row[:3]): row[3] for row in documents}
    for sub in subs:
        sub.local_cseq += 1
    return [(s, bodies.get((s.presentity, s.presence_domain, s.event))) for s in subs]


def _placeholders(n: int, one: str = "%s") -> str:
    return ", ".join([one] * n)


_ROLLBACK = "ROLLBACK"

# Work for Kamailio's timer, left by processes that cannot send SIP.
_INSERT_TASK = ("INSERT INTO pa_task (kind, presentity, presence_domain, argument, created_at)"
                " VALUES (%s, %s, %s, %s, %s)")


def _has_table(cur, name: str) -> bool:
    cur.execute("SELECT 1 FROM information_schema.tables"
                " WHERE table_schema = DATABASE() AND table_name = %s", (name,))
    return cur.fetchone() is not None


class Store:
    def __init__(self, db: Database):
        self.db = db

    # -- schema ---------------------------------------------------------

    def schema_version(self) -> int | None:
        def work(cur):
            if not _has_table(cur, "pa_schema"):
                return None
            cur.execute("SELECT MAX(version) FROM pa_schema")
            return cur.fetchone()[0]
        return self.db.run(work)

    def has_table(self, name: str) -> bool:
        return self.db.run(lambda cur: _has_table(cur, name))

    # -- authorization decisions ----------------------------------------

    def watcher_status(self, domain: str, event: str, presentity: str,
                       watcher: str) -> tuple[str, str] | None:
        def work(cur):
            cur.execute(
                "SELECT status, reason FROM pa_watcher WHERE presentity = %s"
                " AND watcher = %s AND presence_domain = %s AND event = %s",
                (presentity, watcher, domain, event))
            return cur.fetchone()
        return self.db.run(work)

    # -- documents ------------------------------------------------------

    @staticmethod
    def _select_document(key: tuple[str, str, str]) -> tuple[str, tuple]:
        return ("SELECT body FROM pa_document WHERE presentity = %s AND presence_domain = %s"
                " AND event = %s", key)

    @staticmethod
    def _select_watched(key: tuple[str, str, str]) -> tuple[str, tuple]:
        """Whether anyone actively watches `key` (presentity, domain, event)."""
        return ("SELECT EXISTS (SELECT 1 FROM pa_subscription WHERE presentity = %s"
                " AND presence_domain = %s AND event = %s AND status = 'active')", key)

    @staticmethod
    def _select_documents(keys: list[tuple[str, str, str]]) -> tuple[str, list]:
        return ("SELECT presentity, presence_domain, event, body FROM pa_document"
                " WHERE (presentity, presence_domain, event) IN ("
                + _placeholders(len(keys), "(%s, %s, %s)") + ")",
                [v for key in keys for v in key])

    def document_and_watchers(self, key: tuple[str, str, str], winfo_event: str):
        """The presentity's document, and whether anyone watches its watcher
        list: one round trip."""
        def work(cur):
            doc, watched = batch(cur, self._select_document(key),
                                 self._select_watched((key[0], key[1], winfo_event)))
            return (doc.rows[0][0] if doc.rows else None), bool(watched.rows[0][0])
        return self.db.run(work)

    def watched(self, pairs: list[tuple[str, str]], event: str) -> set[tuple[str, str]]:
        """Which (presentity, domain) pairs have active subscriptions to
        `event`: one round trip for a whole batch."""
        def work(cur):
            cur.execute("SELECT DISTINCT presentity, presence_domain FROM pa_subscription"
                        " WHERE event = %s AND status = 'active' AND (presentity, presence_domain)"
                        " IN (" + _placeholders(len(pairs), "(%s, %s)") + ")",
                        [event] + [v for pair in pairs for v in pair])
            return {tuple(row) for row in cur.fetchall()}
        return self.db.run(work) if pairs else set()

    # -- subscriptions --------------------------------------------------

    def add_subscription(self, sub: Subscription, now: int, deadline: int,
                         limits: tuple[int, int], winfo_event: str | None = None
                         ) -> tuple[bytes | None, bool] | None:
        """Store a new subscription whose first NOTIFY (local_cseq) is about
        to be sent, in flight until `deadline`; None (nothing stored) when
        its watcher already has `limits[0]` subscriptions or the
        presentity's event `limits[1]`.  The counts and the insert are one
        statement; concurrent inserts may overshoot a limit by at most one
        per database connection.  With `winfo_event`, also read (after the
        insert, in the same round trip) the presentity's document and
        whether anyone watches its watcher list: read after the subscription
        exists, no concurrent change of the document can fall between this
        read and its fan-out."""
        key = (sub.presentity, sub.presence_domain, sub.event)
        statements = [(_INSERT_LIMITED, [getattr(sub, c) for c in _INSERT_COLS]
                       + [now, deadline, sub.watcher, limits[0], *key, limits[1]])]
        if winfo_event:
            statements += [self._select_document(key),
                           self._select_watched((key[0], key[1], winfo_event))]

        def work(cur):
            results = batch(cur, *statements)
            if results[0].rowcount != 1:
                return None
            sub.id = results[0].lastrowid
            if not winfo_event:
                return None, False
            doc, watched = results[1:]
            return (doc.rows[0][0] if doc.rows else None), bool(watched.rows[0][0])
        return self.db.run(work)

    def refresh_subscription(self, dialog: tuple[str, str, str], event: str,
                             event_id: str, remote_cseq: int, expires_at: int,
                             remote_target: str | None, content_type: str | None,
                             deadline: int
                             ) -> tuple[DialogResult, Subscription | None, bytes | None, bool]:
        """Extend a subscription and reserve the CSeq of the NOTIFY that
        follows, unless one is in flight (then the last value is False: the
        answer to that one sends the newest state).  The CSeq is taken
        before the document is read, so the NOTIFY with the highest CSeq
        always carries the newest document."""
        def work(cur):
            _, update, select, _ = batch(
                cur, BEGIN,
                ("UPDATE pa_subscription SET expires_at = %s,"
                 " remote_target = COALESCE(%s, remote_target),"
                 " content_type = COALESCE(%s, content_type), remote_cseq = %s, "
                 + _NOTIFY_OR_DIRTY +
                 " WHERE " + _DIALOG + " AND event = %s AND event_id = %s AND remote_cseq < %s",
                 (expires_at, remote_target, content_type, remote_cseq, deadline,
                  *dialog, event, event_id, remote_cseq)),
                # In the same transaction: notify_dirty as the UPDATE left it.
                ("SELECT " + _SUB_COLS_S + ", d.body, s.notify_dirty" + _DIALOG_WITH_DOCUMENT
                 + " AND s.event = %s AND s.event_id = %s", (*dialog, event, event_id)), COMMIT)
            if not select.rows:
                return DialogResult.UNKNOWN, None, None, False
            if update.rowcount != 1:
                return DialogResult.STALE, None, None, False
            row = select.rows[0]
            return DialogResult.OK, _subscription(row), row[_N_SUB], not row[_N_SUB + 1]
        return self.db.run(work)

    def remove_subscription(self, dialog: tuple[str, str, str], event: str, event_id: str,
                            remote_cseq: int) -> tuple[DialogResult, Subscription | None, bytes | None]:
        """Delete a subscription the watcher ends (Expires: 0) and return
        it with the CSeq of its final NOTIFY."""
        def work(cur):
            cur.execute(
                "DELETE FROM pa_subscription WHERE " + _DIALOG
                + " AND event = %s AND event_id = %s AND remote_cseq < %s RETURNING " + _SUB_COLS,
                (*dialog, event, event_id, remote_cseq))
            row = cur.fetchone()
            if row is None:
                cur.execute("SELECT 1 FROM pa_subscription WHERE " + _DIALOG
                            + " AND event = %s AND event_id = %s", (*dialog, event, event_id))
                return (DialogResult.STALE if cur.fetchone() else DialogResult.UNKNOWN), None, None
            sub = _subscription(row)
            sub.local_cseq += 1
            cur.execute(*self._select_document((sub.presentity, sub.presence_domain, sub.event)))
            doc = cur.fetchone()
            return DialogResult.OK, sub, (doc[0] if doc else None)
        return self.db.run(work)

    def notify_answered(self, dialog: tuple[str, str, str], cseq: int, failure: int | None,
                        deadline: int) -> tuple[Subscription, bytes | None] | None:
        """The answer to the NOTIFY in flight with CSeq `cseq`, which does
        not end the subscription (`failure`: its code, recorded for
        operators, when not a success).  When the subscription changed
        meanwhile, returns it with the CSeq of the NOTIFY with its newest
        state, now in flight until `deadline`, and its document; otherwise
        (also for an answer to no NOTIFY in flight) None.  One UPDATE by
        the dialog's key; the subscription and its document are read, in a
        second round trip, only when it changed meanwhile."""
        def work(cur):
            cur.execute(_SETTLE, (deadline, failure, *dialog, cseq))
            if cur.rowcount != 1 or cur.lastrowid != cseq + 1:
                return None
            cur.execute("SELECT " + _SUB_COLS_S + ", d.body" + _DIALOG_WITH_DOCUMENT
                        + " AND s.local_cseq = %s", (*dialog, cseq + 1))
            row = cur.fetchone()
            return (_subscription(row), row[_N_SUB]) if row else None
        return self.db.run(work)

    def settle_answered(self, answers: list[tuple[tuple[str, str, str], int]], deadline: int
                        ) -> list[tuple[Subscription, bytes | None]]:
        """Successful answers to NOTIFYs, (dialog, CSeq) each, collected
        over a moment: one UPDATE per chunk ends the wait of those whose
        subscription did not change meanwhile.  Those that did (found in
        the same round trip) get, together, the CSeq of the NOTIFY with
        their newest state, in flight until `deadline`, and are returned
        with their documents: two more round trips, whatever their number.
        Answers to no NOTIFY in flight change nothing."""
        def work(cur):
            changed = []
            for start in range(0, len(answers), _IN_CHUNK):
                keys = [(*dialog, cseq) for dialog, cseq in answers[start:start + _IN_CHUNK]]
                # The Call-IDs first: their index range is certain to be used.
                where = (" WHERE call_id IN (" + _placeholders(len(keys)) + ") AND (call_id,"
                         " local_tag, remote_tag, local_cseq) IN ("
                         + _placeholders(len(keys), "(%s, %s, %s, %s)")
                         + ") AND notify_deadline <> 0 AND notify_dirty = ")
                args = [k[0] for k in keys] + [v for k in keys for v in k]
                _, dirty = batch(
                    cur, ("UPDATE pa_subscription SET notify_deadline = 0, notify_retry = 0"
                          + where + "0", args),
                    ("SELECT id, local_cseq FROM pa_subscription" + where + "1", args))
                changed += [tuple(row) for row in dirty.rows]
            if not changed:
                return []
            # Locked as found (the same NOTIFY still in flight): each moves on
            # once, whatever else answers or sweeps it meanwhile.
            _, locked = batch(cur, BEGIN, (
                "SELECT " + _SUB_COLS + " FROM pa_subscription WHERE (id, local_cseq) IN ("
                + _placeholders(len(changed), "(%s, %s)") + ") AND notify_deadline <> 0"
                " AND notify_dirty = 1 FOR UPDATE", [v for pair in changed for v in pair]))
            subs = [_subscription(row) for row in locked.rows]
            if not subs:
                cur.execute("COMMIT")
                return []
            statements = self._newest_state(subs, deadline, retry=0)
            results = batch(cur, *statements, COMMIT)
            return _with_documents(subs, results[1].rows if len(statements) > 1 else [])
        return self.db.run(work) if answers else []

    def _newest_state(self, subs: list[Subscription], deadline: int,
                      retry: int) -> list[tuple[str, list]]:
        """Statements (inside the caller's transaction, the rows locked)
        that give each subscription the CSeq of the NOTIFY with its newest
        state, in flight until `deadline`, and read the documents of the
        active ones; see _with_documents."""
        statements = [("UPDATE pa_subscription SET local_cseq = local_cseq + 1,"
                       " notify_deadline = %s, notify_dirty = 0, notify_retry = %s"
                       " WHERE id IN (" + _placeholders(len(subs)) + ")",
                       [deadline, retry] + [s.id for s in subs])]
        keys = list(dict.fromkeys((s.presentity, s.presence_domain, s.event) for s in subs
                                  if s.status == "active"))
        if keys:
            statements.append(self._select_documents(keys))
        return statements

    def drop_answered(self, dialog: tuple[str, str, str], cseq: int) -> Subscription | None:
        """End a subscription whose watcher answered the NOTIFY in flight
        (CSeq `cseq`) that it is gone; None when no such NOTIFY is in
        flight (an answer that matches nothing we wait for changes
        nothing)."""
        def work(cur):
            cur.execute("DELETE FROM pa_subscription WHERE " + _DIALOG + " AND local_cseq = %s"
                        " AND notify_deadline <> 0 RETURNING " + _SUB_COLS, (*dialog, cseq))
            row = cur.fetchone()
            return _subscription(row) if row else None
        return self.db.run(work)

    def claim_unanswered(self, now: int, limit: int, end: bool, deadline: int
                         ) -> tuple[int, list[Subscription], list[tuple[Subscription, bytes | None]]]:
        """Up to `limit` subscriptions whose NOTIFY in flight went
        unanswered past its deadline, each claimed once across processes
        and nodes (SKIP LOCKED).  Returns how many, those that end, and
        those that get a NOTIFY with their newest state (with its CSeq, in
        flight until `deadline`, and their document).  With `end`, a
        subscription gets that NOTIFY once, for the answer to the first may
        have been lost with the node that sent it (a restart, a crash), and
        ends when it goes unanswered too; without, each stops waiting, and
        gets the NOTIFY only if it changed meanwhile."""
        def work(cur):
            _, claimed = batch(cur, BEGIN, (
                "SELECT " + _SUB_COLS + ", notify_dirty, notify_retry FROM pa_subscription"
                " WHERE notify_deadline BETWEEN 1 AND %s ORDER BY notify_deadline LIMIT %s"
                " FOR UPDATE SKIP LOCKED", (now, limit)))
            rows = [(_subscription(row), row[_N_SUB], row[_N_SUB + 1]) for row in claimed.rows]
            if not rows:
                cur.execute("COMMIT")
                return 0, [], []
            if end:
                gone = [s for s, _, retried in rows if retried]
                again = [s for s, _, retried in rows if not retried]
            else:
                gone, again = [], [s for s, dirty, _ in rows if dirty]
            handled = {s.id for s in gone} | {s.id for s in again}
            others = [s for s, _, _ in rows if s.id not in handled]
            statements = []
            if gone:
                statements.append(("DELETE FROM pa_subscription WHERE id IN ("
                                   + _placeholders(len(gone)) + ")", [s.id for s in gone]))
            if others:
                statements.append(("UPDATE pa_subscription SET notify_deadline = 0,"
                                   " notify_retry = 0 WHERE id IN ("
                                   + _placeholders(len(others)) + ")", [s.id for s in others]))
            newest = self._newest_state(again, deadline, retry=int(end)) if again else []
            results = batch(cur, *statements, *newest, COMMIT)
            documents = results[-2].rows if len(newest) > 1 else []
            return len(rows), gone, _with_documents(again, documents)
        return self.db.run(work)

    def end_subscriptions_of_call(self, call_id: str) -> list[Subscription]:
        """Remove the subscriptions of a dialog, each with the CSeq of its
        final NOTIFY."""
        def work(cur):
            cur.execute("DELETE FROM pa_subscription WHERE call_id = %s RETURNING " + _SUB_COLS,
                        (call_id,))
            ended = [_subscription(row) for row in cur.fetchall()]
            for sub in ended:
                sub.local_cseq += 1
            return ended
        return self.db.run(work)

    def claim_expired_subscriptions(self, now: int,
                                    limit: int) -> list[tuple[Subscription, bytes | None]]:
        """Remove up to `limit` expired subscriptions and return them with
        the CSeq of their final NOTIFY and their presentity's document.
        SKIP LOCKED lets the timers of every process and node share the
        work, each row claimed once."""
        def work(cur):
            _, claimed = batch(cur, BEGIN, (
                "SELECT " + _SUB_COLS + " FROM pa_subscription WHERE expires_at <= %s"
                " ORDER BY expires_at LIMIT %s FOR UPDATE SKIP LOCKED", (now, limit)))
            subs = [_subscription(row) for row in claimed.rows]
            if not subs:
                cur.execute("COMMIT")
                return []
            keys = list(dict.fromkeys((s.presentity, s.presence_domain, s.event) for s in subs
                                      if s.status == "active"))
            statements = [("DELETE FROM pa_subscription WHERE id IN ("
                           + _placeholders(len(subs)) + ")", [s.id for s in subs])]
            if keys:
                statements.append(self._select_documents(keys))
            results = batch(cur, *statements, COMMIT)
            docs = {tuple(r[:3]): r[3] for r in results[1].rows} if keys else {}
            for s in subs:
                s.local_cseq += 1
            return [(s, docs.get((s.presentity, s.presence_domain, s.event))) for s in subs]
        return self.db.run(work)

    def watchers_to_notify(self, key: tuple[str, str, str], now: int,
                           deadline: int) -> tuple[list[Subscription], bytes | None]:
        """The active subscriptions of a presentity that get a NOTIFY now,
        each with its CSeq (in flight until `deadline`), and the document
        to send; those with a NOTIFY in flight are marked dirty instead.
        The CSeqs are taken under row locks before the document is read, so
        the highest CSeq always carries the newest document."""
        def work(cur):
            _, selected = batch(cur, BEGIN, (
                "SELECT " + _SUB_COLS + ", notify_deadline FROM pa_subscription"
                " WHERE presentity = %s AND presence_domain = %s AND event = %s"
                " AND status = 'active' AND expires_at > %s FOR UPDATE", (*key, now)))
            if not selected.rows:
                cur.execute("COMMIT")
                return [], None
            rows = [(_subscription(row), row[_N_SUB]) for row in selected.rows]
            # Locked: the UPDATE finds each row as read.
            subs = [s for s, in_flight in rows if not in_flight]
            _, doc, _ = batch(
                cur, ("UPDATE pa_subscription SET " + _NOTIFY_OR_DIRTY + " WHERE id IN ("
                      + _placeholders(len(rows)) + ")", [deadline] + [s.id for s, _ in rows]),
                self._select_document(key), COMMIT)
            for s in subs:
                s.local_cseq += 1
            return subs, (doc.rows[0][0] if doc.rows else None)
        return self.db.run(work)

    def subscriptions_of(self, presentity: str, event: str, now: int,
                         domain: str | None = None) -> list[Subscription]:
        """The live subscriptions to a presentity's event package."""
        def work(cur):
            cur.execute("SELECT " + _SUB_COLS + " FROM pa_subscription WHERE presentity = %s"
                        " AND (%s IS NULL OR presence_domain = %s) AND event = %s"
                        " AND expires_at > %s ORDER BY id", (presentity, domain, domain, event, now))
            return [_subscription(row) for row in cur.fetchall()]
        return self.db.run(work)

    def reauthorize_subscription(self, sub: Subscription, status: str, permissions: int,
                                 deadline: int
                                 ) -> tuple[Subscription, bytes | None, bool] | None:
        """Move a subscription to a new status and permissions, if nobody did
        since `sub` was read (else None), reserving the CSeq of the NOTIFY
        that tells the watcher (in flight until `deadline`); returns it
        with the document to send and whether to send it now (not when a
        NOTIFY is in flight: the answer to that one tells the watcher)."""
        key = (sub.presentity, sub.presence_domain, sub.event)

        def work(cur):
            _, update, doc, dirty, _ = batch(
                cur, BEGIN,
                ("UPDATE pa_subscription SET status = %s, permissions = %s, " + _NOTIFY_OR_DIRTY
                 + " WHERE id = %s AND status = %s AND permissions = %s",
                 (status, permissions, deadline, sub.id, sub.status, sub.permissions)),
                self._select_document(key),
                ("SELECT notify_dirty FROM pa_subscription WHERE id = %s", (sub.id,)), COMMIT)
            if update.rowcount != 1:
                return None
            new = dataclasses.replace(sub, status=status, permissions=permissions,
                                      local_cseq=update.lastrowid)
            return new, (doc.rows[0][0] if doc.rows else None), not dirty.rows[0][0]
        return self.db.run(work)

    def end_subscription(self, sub: Subscription) -> Subscription | None:
        """Remove a subscription the notifier ends, if it is still as read;
        returns it with the CSeq of its final NOTIFY."""
        def work(cur):
            cur.execute("DELETE FROM pa_subscription WHERE id = %s AND status = %s"
                        " AND permissions = %s RETURNING " + _SUB_COLS,
                        (sub.id, sub.status, sub.permissions))
            row = cur.fetchone()
            if row is None:
                return None
            ended = _subscription(row)
            ended.local_cseq += 1
            return ended
        return self.db.run(work)

    # -- publications (RFC 3903) -------------------------------------------
    #
    # Every change of a presentity's publications runs in one transaction
    # that first locks the presentity's pa_document row, so changes of one
    # presentity are serialised across processes and nodes, and ends by
    # recomposing the document from the live publications.  `compose` turns
    # them, as (origin, source, parts) oldest first, into the new document.  Each returns
    # (document changed, presentity watched), so that a change nobody
    # watches costs no fan-out.

    @staticmethod
    def _lock_document(key: tuple[str, str, str], now: int) -> tuple[str, tuple]:
        # Creates the row if needed; locks it exclusively either way.
        return ("INSERT INTO pa_document (presentity, presence_domain, event, body, updated_at)"
                " VALUES (%s, %s, %s, '', %s) ON DUPLICATE KEY UPDATE version = version",
                (*key, now))

    @staticmethod
    def _select_live_parts(key: tuple[str, str, str], now: int) -> tuple[str, tuple]:
        return ("SELECT origin, source, parts FROM pa_publication WHERE presentity = %s"
                " AND presence_domain = %s"
                " AND event = %s AND expires_at > %s ORDER BY id", (*key, now))

    def _recompose(self, cur, key, now, compose, statements,
                   results: list | None = None) -> tuple[bool, bool]:
        """Run `statements` (the change), read the live publications and
        the current document, compose, store the document if it changed,
        commit.  Returns (document changed, presentity watched); the
        statements' results go to `results` when given."""
        *done, parts, current, watched = batch(cur, *statements, self._select_live_parts(key, now),
                                               self._select_document(key),
                                               self._select_watched(key))
        if results is not None:
            results.extend(done)
        body = compose(list(parts.rows))
        changed = not current.rows or current.rows[0][0] != body
        if changed:
            batch(cur, ("UPDATE pa_document SET body = %s, version = version + 1,"
                        " updated_at = %s WHERE presentity = %s AND presence_domain = %s"
                        " AND event = %s", (body, now, *key)), COMMIT)
        else:
            cur.execute("COMMIT")
        return changed, bool(watched.rows[0][0])

    def refresh_publication(self, key: tuple[str, str, str], etag: str, new_etag: str,
                            expires_at: int, now: int) -> bool:
        """Extend a publication and give it a new entity-tag; False when the
        entity-tag is unknown or expired (412).  The document is unchanged."""
        def work(cur):
            return cur.execute(
                "UPDATE pa_publication SET etag = %s, expires_at = %s, updated_at = %s"
                " WHERE etag = %s AND presentity = %s AND presence_domain = %s AND event = %s"
                " AND expires_at > %s", (new_etag, expires_at, now, etag, *key, now)) == 1
        return self.db.run(work)

    def add_publication(self, key: tuple[str, str, str], etag: str, source: str,
                        publisher: str, content_type: str, parts: bytes,
                        expires_at: int, now: int, compose,
                        max_publications: int) -> tuple[bool, bool, int]:
        """Store a new publication; it supersedes the earlier ones of the same
        source, and evicts the PUBLISH-made publications refreshed least
        recently beyond `max_publications`.  Returns (document changed,
        watched, how many were evicted)."""
        statements = [BEGIN, self._lock_document(key, now)]
        if source:
            statements.append(("DELETE FROM pa_publication WHERE presentity = %s"
                               " AND presence_domain = %s AND event = %s AND source = %s"
                               " AND origin = 'publish'", (*key, source)))
        # The derived table is materialised (it has a LIMIT), which is what
        # lets a DELETE read the table it deletes from.
        statements.append((
            "DELETE FROM pa_publication WHERE id IN (SELECT id FROM ("
            "SELECT id FROM pa_publication WHERE presentity = %s AND presence_domain = %s"
            " AND event = %s AND origin = 'publish' ORDER BY updated_at DESC, id DESC"
            " LIMIT 18446744073709551615 OFFSET %s) AS evicted)", (*key, max_publications - 1)))
        statements.append((
            "INSERT INTO pa_publication (presentity, presence_domain, event, etag, source,"
            " publisher, content_type, parts, expires_at, updated_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (*key, etag, source, publisher, content_type, parts, expires_at, now)))

        def work(cur):
            results: list[Result] = []
            changed, watched = self._recompose(cur, key, now, compose, statements, results)
            return changed, watched, results[-2].rowcount
        return self.db.run(work)

    def _conditional_change(self, key, now, compose, change) -> tuple[bool, bool, bool]:
        """(entity-tag known, document changed, watched) for a change of the
        publication with a given entity-tag."""
        def work(cur):
            _, _, found = batch(cur, BEGIN, self._lock_document(key, now), change)
            if found.rowcount != 1:
                cur.execute(_ROLLBACK)
                return False, False, False
            return (True, *self._recompose(cur, key, now, compose, []))
        return self.db.run(work)

    def modify_publication(self, key: tuple[str, str, str], etag: str, new_etag: str,
                           content_type: str, parts: bytes, expires_at: int,
                           now: int, compose) -> tuple[bool, bool, bool]:
        """Replace a publication's document."""
        return self._conditional_change(key, now, compose, (
            "UPDATE pa_publication SET etag = %s, content_type = %s, parts = %s,"
            " expires_at = %s, updated_at = %s WHERE etag = %s AND presentity = %s"
            " AND presence_domain = %s AND event = %s AND expires_at > %s",
            (new_etag, content_type, parts, expires_at, now, etag, *key, now)))

    def remove_publication(self, key: tuple[str, str, str], etag: str, now: int,
                           compose) -> tuple[bool, bool, bool]:
        """Remove a publication (Expires: 0)."""
        return self._conditional_change(key, now, compose, (
            "DELETE FROM pa_publication WHERE etag = %s AND presentity = %s"
            " AND presence_domain = %s AND event = %s AND expires_at > %s", (etag, *key, now)))

    def presentities_with_expired_publications(self, now: int, limit: int) -> list[tuple]:
        def work(cur):
            cur.execute("SELECT DISTINCT presentity, presence_domain, event FROM pa_publication"
                        " WHERE expires_at <= %s LIMIT %s", (now, limit))
            return list(cur.fetchall())
        return self.db.run(work)

    def expire_publications(self, key: tuple[str, str, str], now: int, compose,
                            on_expiry) -> tuple[bool, bool]:
        """Handle the presentity's expired publications: `on_expiry(origin,
        parts, now)` gives (parts, expires_at) to keep one in a new form, or
        None to remove it.  When several timers race for one presentity,
        the first handles the rows and the others find none: one change,
        one fan-out."""
        def work(cur):
            _, _, expired = batch(cur, BEGIN, self._lock_document(key, now), (
                "SELECT id, origin, parts FROM pa_publication WHERE presentity = %s"
                " AND presence_domain = %s AND event = %s AND expires_at <= %s", (*key, now)))
            if not expired.rows:
                cur.execute("COMMIT")
                return False, False
            statements = []
            for pub_id, origin, parts in expired.rows:
                kept = on_expiry(origin, parts, now)
                if kept is None:
                    statements.append(("DELETE FROM pa_publication WHERE id = %s", (pub_id,)))
                else:
                    statements.append(("UPDATE pa_publication SET parts = %s, expires_at = %s,"
                                       " updated_at = %s WHERE id = %s", (*kept, now, pub_id)))
            return self._recompose(cur, key, now, compose, statements)
        return self.db.run(work)

    def change_origin_publications(self, key: tuple[str, str, str], origin: str, decide,
                                   now: int, compose) -> tuple[bool, bool]:
        """Reconcile the publications one origin (the registrar, the XMPP
        gateway) keeps for a presentity: `decide(parts by source)` returns
        {source: (parts, expires_at)} to insert or update, or {source: None}
        to remove.  An update of expiry alone recomposes nothing."""
        def work(cur):
            _, _, current = batch(cur, BEGIN, self._lock_document(key, now), (
                "SELECT source, parts, expires_at FROM pa_publication WHERE presentity = %s"
                " AND presence_domain = %s AND event = %s AND origin = %s", (*key, origin)))
            existing = {source: (parts, expires_at) for source, parts, expires_at in current.rows}
            statements, recompose = [], False
            for source, change in decide({s: p for s, (p, _) in existing.items()}).items():
                old = existing.get(source)
                if change is None:
                    if old is not None:
                        statements.append((
                            "DELETE FROM pa_publication WHERE presentity = %s"
                            " AND presence_domain = %s AND event = %s AND origin = %s"
                            " AND source = %s", (*key, origin, source)))
                        recompose = True
                    continue
                parts, expires_at = change
                if old is None:
                    statements.append((
                        "INSERT INTO pa_publication (presentity, presence_domain, event, etag,"
                        " origin, source, content_type, parts, expires_at, updated_at)"
                        " VALUES (%s, %s, %s, %s, %s, %s, '', %s, %s, %s)",
                        (*key, origin + "-" + secrets.token_urlsafe(12), origin, source, parts,
                         expires_at, now)))
                    recompose = True
                elif old != (parts, expires_at):
                    statements.append((
                        "UPDATE pa_publication SET parts = %s, expires_at = %s, updated_at = %s"
                        " WHERE presentity = %s AND presence_domain = %s AND event = %s"
                        " AND origin = %s AND source = %s",
                        (parts, expires_at, now, *key, origin, source)))
                    # Recompose when the content changed, or when a publication
                    # the timer had not yet swept comes back to life.
                    recompose = recompose or old[0] != parts or old[1] <= now
            if not recompose:
                batch(cur, *statements, COMMIT)
                return False, False
            return self._recompose(cur, key, now, compose, statements)
        return self.db.run(work)

    # -- XCAP documents -----------------------------------------------------

    def xcap_document(self, owner: str, auid: str) -> tuple[str, bytes, int] | None:
        """(etag, body, fetched_at) of a stored or cached XCAP document."""
        def work(cur):
            cur.execute("SELECT etag, body, fetched_at FROM pa_xcap_document"
                        " WHERE owner = %s AND auid = %s", (owner, auid))
            return cur.fetchone()
        return self.db.run(work)

    def save_xcap_document(self, owner: str, auid: str, etag: str, body: bytes,
                           now: int) -> None:
        def work(cur):
            cur.execute("INSERT INTO pa_xcap_document (owner, auid, etag, body, fetched_at)"
                        " VALUES (%s, %s, %s, %s, %s) ON DUPLICATE KEY UPDATE"
                        " etag = VALUES(etag), body = VALUES(body), fetched_at = VALUES(fetched_at)",
                        (owner, auid, etag, body, now))
        self.db.run(work)

    def touch_xcap_document(self, owner: str, auid: str, now: int) -> None:
        def work(cur):
            cur.execute("UPDATE pa_xcap_document SET fetched_at = %s WHERE owner = %s"
                        " AND auid = %s", (now, owner, auid))
        self.db.run(work)

    def write_xcap_document(self, owner: str, auid: str, body: bytes | None, etag: str,
                            allowed: Callable[[str | None], bool], now: int) -> str:
        """Store (body) or delete (None) a document of the built-in XCAP
        server if `allowed(current etag or None)`, atomically.  Returns
        'created', 'replaced', 'deleted', 'missing' or 'precondition'."""
        def work(cur):
            _, row = batch(cur, BEGIN, ("SELECT etag FROM pa_xcap_document WHERE owner = %s"
                                        " AND auid = %s FOR UPDATE", (owner, auid)))
            current = row.rows[0][0] if row.rows else None
            if not allowed(current) or (body is None and current is None):
                cur.execute(_ROLLBACK)
                return "precondition" if not allowed(current) else "missing"
            if body is None:
                batch(cur, ("DELETE FROM pa_xcap_document WHERE owner = %s AND auid = %s",
                            (owner, auid)), COMMIT)
                return "deleted"
            batch(cur, ("INSERT INTO pa_xcap_document (owner, auid, etag, body, fetched_at)"
                        " VALUES (%s, %s, %s, %s, %s) ON DUPLICATE KEY UPDATE etag = VALUES(etag),"
                        " body = VALUES(body), fetched_at = VALUES(fetched_at)",
                        (owner, auid, etag, body, now)), COMMIT)
            return "created" if current is None else "replaced"
        return self.db.run(work)

    def stale_rule_owners(self, auid: str, before: int, limit: int) -> list[str]:
        """Watched presentities whose copy of the rules is older than
        `before`, oldest first (through the copies' age index, not a scan of
        the subscriptions)."""
        def work(cur):
            cur.execute(
                "SELECT x.owner FROM pa_xcap_document x WHERE x.fetched_at < %s"
                " AND x.auid = %s AND EXISTS (SELECT 1 FROM pa_subscription s"
                " WHERE s.presentity = x.owner AND s.event = 'presence')"
                " ORDER BY x.fetched_at LIMIT %s", (before, auid, limit))
            return [row[0] for row in cur.fetchall()]
        return self.db.run(work)

    def first_nonce_use(self, nonce: str, nc: int, expires_at: int, now: int) -> bool:
        """Record that (nonce, nc) proved a request; False when it already
        had (a replay).  Expired records go at the same time, so the table
        holds only live nonces (a replay of an expired one is stale anyway)."""
        def work(cur):
            _, inserted = batch(
                cur, ("DELETE FROM pa_xcap_nonce WHERE expires_at < %s", (now,)),
                ("INSERT IGNORE INTO pa_xcap_nonce (nonce, nc, expires_at) VALUES (%s, %s, %s)",
                 (nonce, nc, expires_at)))
            return inserted.rowcount == 1
        return self.db.run(work)

    def shared_secret(self, name: str, new: str) -> str:
        """The secret `name` every node shares: `new` if this is the first
        process to ask, else the one stored before."""
        def work(cur):
            _, row = batch(cur, ("INSERT IGNORE INTO pa_secret (name, value) VALUES (%s, %s)",
                                 (name, new)),
                           ("SELECT value FROM pa_secret WHERE name = %s", (name,)))
            return row.rows[0][0]
        return self.db.run(work)

    def ha1(self, user: str, realm: str) -> str | None:
        """The digest secret of a user from Kamailio's subscriber table."""
        def work(cur):
            cur.execute("SELECT ha1 FROM subscriber WHERE username = %s AND domain = %s",
                        (user, realm))
            row = cur.fetchone()
            return row[0] if row else None
        return self.db.run(work)

    # -- the task queue: work another process asks Kamailio to do ----------
    #
    # Processes outside Kamailio (the XMPP gateway, pa-admin) cannot send
    # SIP; they leave a task, and the timer of some Kamailio node claims it
    # within a second.

    def enqueue_task(self, kind: str, presentity: str, domain: str, now: int,
                     argument: str = "") -> None:
        def work(cur):
            cur.execute(_INSERT_TASK, (kind, presentity, domain, argument, now))
        self.db.run(work)

    def claim_tasks(self, limit: int) -> list[tuple[str, str, str, str]]:
        """Take up to `limit` tasks (kind, presentity, domain, argument),
        each once across processes and nodes, duplicates merged."""
        def work(cur):
            _, claimed = batch(cur, BEGIN, (
                "SELECT id, kind, presentity, presence_domain, argument FROM pa_task"
                " ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED", (limit,)))
            if not claimed.rows:
                cur.execute("COMMIT")
                return []
            batch(cur, ("DELETE FROM pa_task WHERE id IN (" + _placeholders(len(claimed.rows))
                        + ")", [row[0] for row in claimed.rows]), COMMIT)
            return list(dict.fromkeys(tuple(row[1:]) for row in claimed.rows))
        return self.db.run(work)

    def document_version(self, key: tuple[str, str, str]) -> tuple[int, bytes | None]:
        def work(cur):
            cur.execute("SELECT version, body FROM pa_document WHERE presentity = %s"
                        " AND presence_domain = %s AND event = %s", key)
            row = cur.fetchone()
            return (row[0], row[1]) if row else (0, None)
        return self.db.run(work)

    # -- the XMPP gateway's links ---------------------------------------------

    def jabber_watch_pairs(self, domain: str, now: int) -> set[tuple[str, str]]:
        """(SIP watcher, XMPP user) of the live presence subscriptions to
        presentities of `domain`."""
        def work(cur):
            cur.execute("SELECT DISTINCT watcher, presentity FROM pa_subscription"
                        " WHERE presence_domain = %s AND event = 'presence' AND expires_at > %s",
                        (domain, now))
            return {tuple(row) for row in cur.fetchall()}
        return self.db.run(work)

    def xmpp_links(self, direction: str, jid: str | None = None,
                   state: str | None = None) -> dict[tuple[str, str], str]:
        """{(SIP user, JID): state} of the gateway's links one way."""
        def work(cur):
            cur.execute("SELECT sip_user, jid, state FROM pa_xmpp_link WHERE direction = %s"
                        " AND (%s IS NULL OR jid = %s) AND (%s IS NULL OR state = %s)",
                        (direction, jid, jid, state, state))
            return {(sip_user, j): s for sip_user, j, s in cur.fetchall()}
        return self.db.run(work)

    def xmpp_link_state(self, direction: str, sip_user: str, jid: str) -> str | None:
        def work(cur):
            cur.execute("SELECT state FROM pa_xmpp_link WHERE direction = %s AND sip_user = %s"
                        " AND jid = %s", (direction, sip_user, jid))
            row = cur.fetchone()
            return row[0] if row else None
        return self.db.run(work)

    def save_xmpp_link(self, direction: str, sip_user: str, jid: str, state: str,
                       now: int) -> None:
        def work(cur):
            cur.execute("INSERT INTO pa_xmpp_link (direction, sip_user, jid, state, updated_at)"
                        " VALUES (%s, %s, %s, %s, %s) ON DUPLICATE KEY UPDATE"
                        " state = VALUES(state), updated_at = VALUES(updated_at)",
                        (direction, sip_user, jid, state, now))
        self.db.run(work)

    def delete_xmpp_link(self, direction: str, sip_user: str, jid: str) -> None:
        def work(cur):
            cur.execute("DELETE FROM pa_xmpp_link WHERE direction = %s AND sip_user = %s"
                        " AND jid = %s", (direction, sip_user, jid))
        self.db.run(work)

    def mark_xmpp_link_version(self, direction: str, sip_user: str, jid: str,
                               version: int) -> None:
        def work(cur):
            cur.execute("UPDATE pa_xmpp_link SET version = %s WHERE direction = %s"
                        " AND sip_user = %s AND jid = %s", (version, direction, sip_user, jid))
        self.db.run(work)

    def xmpp_watchers_to_update(self, domain: str) -> list[tuple]:
        """The XMPP watchers of SIP users that wait for authorization, or
        whose SIP user's document changed since they were told:
        (SIP user, JID, state, told version, current version, document)."""
        def work(cur):
            cur.execute(
                "SELECT l.sip_user, l.jid, l.state, l.version, COALESCE(d.version, 0), d.body"
                " FROM pa_xmpp_link l LEFT JOIN pa_document d ON d.presentity = l.sip_user"
                " AND d.presence_domain = %s AND d.event = 'presence'"
                " WHERE l.direction = 'in' AND (l.state = 'pending'"
                " OR COALESCE(d.version, 0) <> l.version)", (domain,))
            return list(cur.fetchall())
        return self.db.run(work)

    def save_xmpp_resource(self, jid: str, presence, now: int,
                           limit: int) -> list | None:
        """Record the presence of one resource of an XMPP user (an
        unavailable one is forgotten) and return all its resources'; None,
        recording nothing, for a new resource beyond `limit` of them.
        The gateway is the only writer, one process."""
        from .xmpp_mapping import XmppPresence

        resource = presence.resource.encode("utf-8", "surrogatepass")

        def work(cur):
            if presence.available:
                cur.execute("SELECT COUNT(*), COALESCE(SUM(resource = %s), 0) FROM"
                            " pa_xmpp_resource WHERE jid = %s", (resource, jid))
                count, known = cur.fetchone()
                if not known and count >= limit:
                    return None
                first = ("INSERT INTO pa_xmpp_resource (jid, resource, available, shown, status,"
                         " priority, updated_at) VALUES (%s, %s, 1, %s, %s, %s, %s)"
                         " ON DUPLICATE KEY UPDATE shown = VALUES(shown), status = VALUES(status),"
                         " priority = VALUES(priority), updated_at = VALUES(updated_at)",
                         (jid, resource, presence.show, presence.status[:1000],
                          presence.priority, now))
            else:
                first = ("DELETE FROM pa_xmpp_resource WHERE jid = %s AND resource = %s",
                         (jid, resource))
            _, rows = batch(cur, first, ("SELECT resource, shown, status, priority FROM"
                                         " pa_xmpp_resource WHERE jid = %s ORDER BY resource",
                                         (jid,)))
            return [XmppPresence(True, show, status, priority,
                                 bytes(name).decode("utf-8", "surrogatepass"))
                    for name, show, status, priority in rows.rows]
        return self.db.run(work)

    def extend_origin_publications(self, origin: str, domain: str, expires_at: int) -> None:
        def work(cur):
            cur.execute("UPDATE pa_publication SET expires_at = %s WHERE origin = %s"
                        " AND presence_domain = %s", (expires_at, origin, domain))
        self.db.run(work)

    def forget_xmpp_resources(self, jid: str) -> None:
        def work(cur):
            cur.execute("DELETE FROM pa_xmpp_resource WHERE jid = %s", (jid,))
        self.db.run(work)

    # -- statistics -------------------------------------------------------------

    def gauges(self, now: int) -> dict[str, int]:
        """The cluster-wide gauges of metrics.GAUGES, in one round trip."""
        def work(cur):
            subs, pubs = batch(
                cur,
                ("SELECT event, status, COUNT(*) FROM pa_subscription WHERE expires_at > %s"
                 " GROUP BY event, status", (now,)),
                ("SELECT COUNT(*), COUNT(DISTINCT presentity, presence_domain)"
                 " FROM pa_publication WHERE expires_at > %s", (now,)))
            counts = {(event, status): int(n) for event, status, n in subs.rows}
            return {
                "pa_subscriptions_active": counts.get(("presence", "active"), 0),
                "pa_subscriptions_pending": counts.get(("presence", "pending"), 0),
                "pa_winfo_subscriptions": sum(n for (event, _), n in counts.items()
                                              if event == "presence.winfo"),
                "pa_publications": int(pubs.rows[0][0]),
                "pa_presentities": int(pubs.rows[0][1]),
            }
        return self.db.run(work)

    # -- pa-admin ---------------------------------------------------------------

    def admin_presentities(self, domain: str, like: str, now: int) -> list[dict]:
        def work(cur):
            cur.execute(
                "SELECT p.presentity, p.presence_domain, p.publications,"
                " (SELECT COUNT(*) FROM pa_subscription s WHERE s.presentity = p.presentity"
                "  AND s.presence_domain = p.presence_domain AND s.event = 'presence'"
                "  AND s.expires_at > %s),"
                " (SELECT d.version FROM pa_document d WHERE d.presentity = p.presentity"
                "  AND d.presence_domain = p.presence_domain AND d.event = 'presence')"
                " FROM (SELECT presentity, presence_domain, COUNT(*) AS publications"
                "  FROM pa_publication WHERE presence_domain = %s AND presentity LIKE %s"
                "  AND expires_at > %s GROUP BY presentity, presence_domain"
                "  UNION SELECT presentity, presence_domain, 0 FROM pa_subscription"
                "  WHERE presence_domain = %s AND presentity LIKE %s AND expires_at > %s"
                "  AND presentity NOT IN (SELECT presentity FROM pa_publication"
                "   WHERE presence_domain = %s AND expires_at > %s)"
                "  GROUP BY presentity, presence_domain) p ORDER BY p.presentity",
                (now, domain, f"%{like}%", now, domain, f"%{like}%", now, domain, now))
            return [dict(presentity=r[0], domain=r[1], publications=r[2], watchers=r[3],
                         version=r[4] or 0) for r in cur.fetchall()]
        return self.db.run(work)

    def admin_publications(self, presentity: str, domain: str, now: int) -> list[dict]:
        def work(cur):
            cur.execute("SELECT etag, origin, source, publisher, expires_at, updated_at"
                        " FROM pa_publication WHERE presentity = %s AND presence_domain = %s"
                        " AND expires_at > %s ORDER BY id", (presentity, domain, now))
            names = ("etag", "origin", "source", "publisher", "expires_at", "updated_at")
            return [dict(zip(names, r)) for r in cur.fetchall()]
        return self.db.run(work)

    def admin_subscriptions(self, presentity: str, domain: str) -> list[dict]:
        def work(cur):
            cur.execute("SELECT watcher, event, status, expires_at, last_notify_code,"
                        " local_cseq, call_id FROM pa_subscription WHERE presentity = %s"
                        " AND presence_domain = %s ORDER BY event, watcher", (presentity, domain))
            names = ("watcher", "event", "status", "expires_at", "last_notify_code",
                     "local_cseq", "call_id")
            return [dict(zip(names, r)) for r in cur.fetchall()]
        return self.db.run(work)

    def admin_decisions(self, presentity: str, domain: str) -> list[dict]:
        def work(cur):
            cur.execute("SELECT watcher, status, reason, updated_at FROM pa_watcher"
                        " WHERE presentity = %s AND presence_domain = %s ORDER BY watcher",
                        (presentity, domain))
            return [dict(watcher=r[0], status=r[1], reason=r[2], updated=r[3])
                    for r in cur.fetchall()]
        return self.db.run(work)

    def admin_decide(self, presentity: str, watcher: str, domain: str, status: str,
                     reason: str, now: int) -> None:
        """Store the decision, and the task that tells the watchers: one
        transaction."""
        def work(cur):
            batch(cur, BEGIN,
                  ("INSERT INTO pa_watcher (presentity, watcher, presence_domain, event, status,"
                   " reason, updated_at) VALUES (%s, %s, %s, 'presence', %s, %s, %s)"
                   " ON DUPLICATE KEY UPDATE status = VALUES(status), reason = VALUES(reason),"
                   " updated_at = VALUES(updated_at)",
                   (presentity, watcher, domain, status, reason, now)),
                  (_INSERT_TASK, ("reauthorize", presentity, domain, "", now)), COMMIT)
        self.db.run(work)

    def admin_remove_watcher(self, presentity: str, watcher: str, domain: str,
                             now: int) -> None:
        """Forget the decision, and leave the task that ends the watcher's
        subscriptions: one transaction."""
        def work(cur):
            batch(cur, BEGIN,
                  ("DELETE FROM pa_watcher WHERE presentity = %s AND watcher = %s"
                   " AND presence_domain = %s", (presentity, watcher, domain)),
                  (_INSERT_TASK, ("remove", presentity, domain, watcher, now)), COMMIT)
        self.db.run(work)

    def admin_subscription_exists(self, call_id: str) -> bool:
        def work(cur):
            cur.execute("SELECT 1 FROM pa_subscription WHERE call_id = %s LIMIT 1", (call_id,))
            return cur.fetchone() is not None
        return self.db.run(work)

    def admin_counts(self, now: int) -> dict:
        def work(cur):
            counts = {}
            cur.execute("SELECT event, status, COUNT(*) FROM pa_subscription WHERE expires_at > %s"
                        " GROUP BY event, status", (now,))
            for event, status, n in cur.fetchall():
                counts[f"subscriptions {event} {status}"] = n
            cur.execute("SELECT origin, COUNT(*) FROM pa_publication WHERE expires_at > %s"
                        " GROUP BY origin", (now,))
            for origin, n in cur.fetchall():
                counts[f"publications {origin}"] = n
            cur.execute("SELECT COUNT(*) FROM pa_document WHERE body <> ''")
            counts["documents"] = cur.fetchone()[0]
            cur.execute("SELECT COUNT(*) FROM pa_task")
            counts["tasks waiting"] = cur.fetchone()[0]
            return counts
        return self.db.run(work)

    def admin_expired(self, now: int) -> dict:
        """Expired state not yet swept."""
        def work(cur):
            subs, pubs = batch(
                cur, ("SELECT COUNT(*) FROM pa_subscription WHERE expires_at <= %s", (now,)),
                ("SELECT COUNT(*) FROM pa_publication WHERE expires_at <= %s", (now,)))
            return {"subscriptions": int(subs.rows[0][0]), "publications": int(pubs.rows[0][0])}
        return self.db.run(work)

    # -- SIP and XCAP users: Kamailio's subscriber table (auth_db) ----------

    def admin_set_user(self, user: str, domain: str, ha1: str, ha1b: str) -> bool:
        """Create the user or give it new credentials; True when created.
        The password itself is not stored (auth_db reads ha1)."""
        def work(cur):
            cur.execute("INSERT INTO subscriber (username, domain, password, ha1, ha1b)"
                        " VALUES (%s, %s, '', %s, %s) ON DUPLICATE KEY UPDATE"
                        " password = '', ha1 = VALUES(ha1), ha1b = VALUES(ha1b)",
                        (user, domain, ha1, ha1b))
            return cur.rowcount == 1
        return self.db.run(work)

    def admin_remove_user(self, user: str, domain: str) -> bool:
        def work(cur):
            cur.execute("DELETE FROM subscriber WHERE username = %s AND domain = %s",
                        (user, domain))
            return cur.rowcount > 0
        return self.db.run(work)

    def admin_users(self, like: str) -> list[dict]:
        def work(cur):
            cur.execute("SELECT username, domain FROM subscriber"
                        " WHERE CONCAT(username, '@', domain) LIKE %s"
                        " ORDER BY domain, username", (f"%{like}%",))
            return [dict(user=f"{u}@{d}") for u, d in cur.fetchall()]
        return self.db.run(work)

    def apply_sql(self, text: str) -> None:
        """Run a schema file (statements separated by ';' at line ends)."""
        statements = [s.strip() for s in text.split(";\n") if s.strip()
                      and not all(line.startswith("--") or not line.strip()
                                  for line in s.strip().splitlines())]

        def work(cur):
            for statement in statements:
                cur.execute(statement.rstrip(";"))
        self.db.run(work)

    # -- import from native presence -------------------------------------------
    #
    # pa-admin import-native (pa_handlers.native_import) reads the tables of
    # Kamailio's own presence module and carries their live state into ours.
    # The reads run on a Store over the native module's database; the
    # writes, all of one run, in one transaction on ours.

    def native_missing(self) -> list[str]:
        """What this database lacks of the native presence module's tables:
        'table' for a missing table, 'table.column' for a missing column."""
        def work(cur):
            cur.execute("SELECT table_name, column_name FROM information_schema.columns"
                        " WHERE table_schema = DATABASE() AND table_name IN ("
                        + _placeholders(len(NATIVE_COLUMNS)) + ")", tuple(NATIVE_COLUMNS))
            return {(str(t), str(c)) for t, c in cur.fetchall()}
        present = self.db.run(work)
        tables = {t for t, _ in present}
        missing = []
        for table, columns in NATIVE_COLUMNS.items():
            if table not in tables:
                missing.append(table)
            else:
                missing += [f"{table}.{c}" for c in columns if (table, c) not in present]
        return missing

    def _native_rows(self, table: str, where: str, args: tuple) -> list[dict]:
        columns = NATIVE_COLUMNS[table]

        def work(cur):
            cur.execute("SELECT " + ", ".join(columns) + " FROM " + table + where
                        + " ORDER BY id", args)
            return [dict(zip(columns, row)) for row in cur.fetchall()]
        return self.db.run(work)

    def native_publications(self, now: int) -> list[dict]:
        """The live rows of `presentity`, oldest first (the order in which
        our aggregate lists publications)."""
        rows = self._native_rows("presentity", " WHERE expires > %s", (now,))
        return sorted(rows, key=lambda r: (r["received_time"], r["id"]))

    def native_subscriptions(self, now: int) -> list[dict]:
        """The live rows of `active_watchers` (expires is absolute there)."""
        return self._native_rows("active_watchers", " WHERE expires > %s", (now,))

    def native_decisions(self) -> list[dict]:
        """The rows of `watchers`: authorization decisions, which do not expire."""
        return self._native_rows("watchers", "", ())

    def import_native_state(self, publications: list[tuple], subscriptions: list[Subscription],
                            decisions: list[tuple], now: int,
                            composer: Callable[[str], Callable[[list[tuple]], bytes]]) -> dict:
        """Insert, in one transaction, what is not there yet:
        publications (key, etag, source, publisher, content_type, parts,
        expires_at, updated_at) -- one is there when its entity-tag or its
        source (which names the native row) is; subscriptions, by dialog;
        decisions (presentity, watcher, domain, event, status, reason,
        updated_at), by their key.  Recomposes the document of every
        presentity that got a publication (`composer(presentity)` gives the
        compose function of the PUBLISH path), and leaves a fan-out task for
        each presentity that got a publication or an active presence
        subscription: pa-admin cannot send SIP, and the first Kamailio timer
        then tells the imported watchers the current document.  Returns the
        numbers inserted and found already present."""
        def work(cur):
            cur.execute("START TRANSACTION")
            etags = _existing(cur, "SELECT etag FROM pa_publication WHERE etag IN", "(%s)",
                              [(p[1],) for p in publications])
            sources = _existing(cur, "SELECT presentity, presence_domain, event, source"
                                " FROM pa_publication WHERE (presentity, presence_domain, event,"
                                " source) IN", "(%s, %s, %s, %s)",
                                [(*p[0], p[2]) for p in publications])
            dialogs = _existing(cur, "SELECT call_id, local_tag, remote_tag FROM pa_subscription"
                                " WHERE (call_id, local_tag, remote_tag) IN", "(%s, %s, %s)",
                                [s.dialog for s in subscriptions])
            decided = _existing(cur, "SELECT presentity, watcher, presence_domain, event"
                                " FROM pa_watcher WHERE (presentity, watcher, presence_domain,"
                                " event) IN", "(%s, %s, %s, %s)", [d[:4] for d in decisions])
            new_pubs = [p for p in publications
                        if (p[1],) not in etags and (*p[0], p[2]) not in sources]
            new_subs = [s for s in subscriptions if s.dialog not in dialogs]
            new_decisions = [d for d in decisions if tuple(d[:4]) not in decided]
            keys = sorted({p[0] for p in new_pubs})
            # Lock the documents first, in a fixed order, as every change of
            # publications does: a PUBLISH meanwhile waits for us.
            for key in keys:
                cur.execute(*self._lock_document(key, now))
            _insert_many(cur, "INSERT INTO pa_publication (presentity, presence_domain, event,"
                         " etag, source, publisher, content_type, parts, expires_at, updated_at)"
                         " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                         [(*p[0], *p[1:]) for p in new_pubs])
            _insert_many(cur, _INSERT_SUBSCRIPTION,
                         [[getattr(s, c) for c in _INSERT_COLS] + [now] for s in new_subs])
            _insert_many(cur, "INSERT INTO pa_watcher (presentity, watcher, presence_domain,"
                         " event, status, reason, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                         new_decisions)
            for key in keys:
                self._store_composed(cur, key, now, composer(key[0]))
            fan_outs = sorted({key[:2] for key in keys} | {
                (s.presentity, s.presence_domain) for s in new_subs
                if s.event == "presence" and s.status == "active"})
            _insert_many(cur, _INSERT_TASK,
                         [("fan-out", presentity, domain, "", now)
                          for presentity, domain in fan_outs])
            cur.execute("COMMIT")
            present = (len(publications) - len(new_pubs) + len(subscriptions) - len(new_subs)
                       + len(decisions) - len(new_decisions))
            return {"publications": len(new_pubs), "subscriptions": len(new_subs),
                    "decisions": len(new_decisions), "already present": present}
        return self.db.run(work)

    def _store_composed(self, cur, key: tuple[str, str, str], now: int, compose) -> None:
        """Recompose a locked document from the live publications, inside
        the caller's transaction (unlike _recompose, which commits)."""
        parts, current = batch(cur, self._select_live_parts(key, now), self._select_document(key))
        body = compose(list(parts.rows))
        if not current.rows or current.rows[0][0] != body:
            cur.execute("UPDATE pa_document SET body = %s, version = version + 1, updated_at = %s"
                        " WHERE presentity = %s AND presence_domain = %s AND event = %s",
                        (body, now, *key))


# -- import from native presence: module-level helpers ----------------------

# The columns of Kamailio's presence module (5.x schema) the import reads.
NATIVE_COLUMNS = {
    "presentity": ("id", "username", "domain", "event", "etag", "expires", "received_time",
                   "body", "sender", "ruid"),
    "active_watchers": ("id", "presentity_uri", "watcher_username", "watcher_domain", "to_user",
                        "to_domain", "from_user", "from_domain", "event", "event_id", "to_tag",
                        "from_tag", "callid", "local_cseq", "remote_cseq", "contact",
                        "record_route", "expires", "status", "reason", "version", "socket_info",
                        "local_contact"),
    "watchers": ("id", "presentity_uri", "watcher_username", "watcher_domain", "event", "status",
                 "reason", "inserted_time"),
}

_IN_CHUNK = 500


def _existing(cur, select_in: str, one: str, keys: list[tuple]) -> set[tuple]:
    """Which of `keys` the query `select_in (one, one, ...)` finds, asked
    in chunks so that no statement grows without bound."""
    found: set[tuple] = set()
    keys = list(dict.fromkeys(keys))
    for start in range(0, len(keys), _IN_CHUNK):
        chunk = keys[start:start + _IN_CHUNK]
        cur.execute(select_in + " (" + _placeholders(len(chunk), one) + ")",
                    [v for key in chunk for v in key])
        found.update(tuple(row) for row in cur.fetchall())
    return found


def _insert_many(cur, sql: str, rows: list) -> None:
    if rows:
        cur.executemany(sql, rows)
