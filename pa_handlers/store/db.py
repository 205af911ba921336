"""The database connection of a Kamailio process, and the one place that
owns transactions.

State lives in MySQL/MariaDB so that every Kamailio process, every node and
a restarted server see the same truth.  Each Kamailio process is single
threaded and owns one connection, opened lazily after the fork.  A
connection the server closed while it lay idle (a database restart) is
replaced before it carries a request; one lost while it carried one is
replaced and the work run again, once, if nothing the work sent can have
changed the database.  Otherwise a request that cannot reach the database
gets StoreUnavailable at once (the caller answers 500 with Retry-After);
the next request tries again, after a short pause when the server could
not be reached, so service resumes by itself.

Transactions.  The connection runs in autocommit mode, so a read costs one
round trip and holds nothing afterwards.  `Database.transaction` turns
autocommit off for the work's statements and commits them only after the
client has seen every one of them succeed: several statements travel in
one round trip (`Session.batch`), and when a statement in the middle fails
or is aborted (a deadlock, or a Galera certification failure, which aborts
the transaction from outside while the batch runs), what follows it can
commit nothing by itself.  The COMMIT rides in the last batch only when the
transaction writes at most once (then there is nothing it could leave half
done); otherwise it is its own round trip.  A transaction aborted by a
deadlock or a certification failure is run again from the start, a few
times, after a short random pause (two nodes whose transactions collided
would otherwise collide again).

Several servers.  A url may name several (a Galera cluster's nodes): a new
connection tries them in order, starting with the one after a server that
failed, so a process carries on through another node when its own dies or
leaves the cluster's primary component (error 1047).
"""

from __future__ import annotations

import logging
import os
import random
import select
import time
from typing import Callable, TypeVar

from ..config import DatabaseUrl
from .driver import DRIVER, StoreUnavailable, warn_outage  # noqa: F401  (re-exported)
from .session import Result, Session, Statement  # noqa: F401  (re-exported)

log = logging.getLogger("pa.store")

T = TypeVar("T")

# Errors after which the same transaction may simply be run again: lock
# wait timeout, deadlock (and Galera's certification failure), Galera's
# "not ready", statement interrupted.
RETRY_CODES = frozenset({1205, 1213, 1180, 1181, 1047, 1317})
# Server errors that mean the connection or the server is going away.
_GONE_CODES = frozenset({1053, 1077, 1078, 1079, 1080, 1152, 1153, 1927, 4031})
# The connection broke under a query (client errors: server gone away, lost
# during the query, lost at reading; server: connection killed, client
# idle too long): a fresh one may do better.
_LOST_CODES = frozenset({2006, 2013, 2055, 1927, 4031})
# Attempts of a transaction that the server aborted (a deadlock, a Galera
# certification conflict), and the longest pause before the last one: each
# pause is random, up to twice the one before (full jitter).
# Six devices of one presentity publishing at once through three Galera
# nodes (tests/integration/test_galera.py) ran out of five attempts about
# once in three runs of sixty PUBLISHes; the pauses of eight add up to
# 0.6 s at most.
_RETRIES = 8
_BACKOFF = 0.005
_BACKOFF_MAX = 0.16
# Galera's "node not ready" (it left the primary component): another
# server of the url may be in it.
_NOT_READY = 1047
_MULTI_STATEMENTS = 1 << 16     # CLIENT_MULTI_STATEMENTS of the MySQL protocol



class Database:
    """One connection per process, reconnected after failures.

    Not DBUtils (SteadyDB/PersistentDB), though it does the like: SteadyDB
    runs a statement that failed on a lost connection again on a new one
    unless begin() told it of a transaction, which cannot tell a write that
    may have been committed from one that cannot; it finds dead connections
    by pinging (a round trip) where one poll(2) does; and Debian 12, whose
    Python Kamailio embeds, does not package it."""

    def __init__(self, url: DatabaseUrl, timeout: float, pause: float = 1.0,
                 clock: Callable[[], float] = time.monotonic, sync_wait: int = 0,
                 on_retry: Callable[[int], None] | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        self.url = url
        self.timeout = timeout
        self.pause = pause
        self.clock = clock
        # wsrep_sync_wait of every session (Galera's causal reads).
        self.sync_wait = sync_wait
        # Told the error code of every transaction run again (statistics).
        self.on_retry = on_retry
        self.sleep = sleep
        self.retries = 0
        self._server = 0            # index in url.servers of the next to try first
        self._conn: object | None = None
        self._pid = 0
        self._failed_at: float | None = None
        self._used_at = 0.0

    @classmethod
    def for_settings(cls, settings, timeout: float | None = None, **kw) -> "Database":
        """The database of the settings' db_url, with their db_timeout and
        db_sync_wait."""
        return cls(settings.db_url, settings.db_timeout if timeout is None else timeout,
                   sync_wait=settings.db_sync_wait, **kw)

    # -- the connection -----------------------------------------------------

    def _connect(self) -> object:
        now = self.clock()
        if self._failed_at is not None and now - self._failed_at < self.pause:
            # Fail fast for a moment after a failure, so that an outage costs
            # each request microseconds, not a connect timeout.
            raise StoreUnavailable("database unavailable (recent failure)")
        servers = self.url.servers
        errors = []
        for i in range(len(servers)):
            index = (self._server + i) % len(servers)
            try:
                conn = self._open(*servers[index])
            except DRIVER.Error as e:
                errors.append(f"{servers[index][0]}:{servers[index][1]}: {e}")
                continue
            if index != self._server:
                log.warning("database: connected to %s:%d (%s)", *servers[index],
                            "; ".join(errors) or "the server before it failed")
            self._server = index
            self._failed_at = None
            self._pid = os.getpid()
            self._used_at = now
            self._readable = select.poll()
            self._readable.register(DRIVER.fileno(conn), select.POLLIN | select.POLLPRI)
            return conn
        self._failed_at = now
        raise StoreUnavailable(f"cannot connect to {self.url.redacted()}: {'; '.join(errors)}")

    def _open(self, host: str, port: int) -> object:
        # Whole seconds: what both drivers (and the C client) accept.
        seconds = max(1, round(self.timeout))
        where = {"unix_socket": self.url.unix_socket} if self.url.unix_socket else {}
        conn = DRIVER.connect(
            host=host, port=port, user=self.url.user,
            password=self.url.password, database=self.url.database, charset="utf8mb4",
            autocommit=True, connect_timeout=seconds, read_timeout=seconds,
            write_timeout=seconds,
            init_command="SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
            # Several statements per round trip (see Session.batch);
            # values are still escaped one by one, so this opens no
            # injection.
            client_flag=_MULTI_STATEMENTS, **where)
        if self.sync_wait:
            # Causal reads: each statement waits until this node applied
            # every write the cluster committed before it began, so an
            # entity-tag, a CSeq or a dialog another node just changed is
            # seen here.  One round trip per connection.
            try:
                cursor = conn.cursor()
                cursor.execute("SET SESSION wsrep_sync_wait = %s", (self.sync_wait,))
                cursor.close()
            except DRIVER.Error:
                conn.close()
                raise
        return conn

    def _fail_over(self) -> None:
        """Drop the connection; the next one starts with the server after
        this one (when the url names several)."""
        self.discard()
        if len(self.url.servers) > 1:
            self._server = (self._server + 1) % len(self.url.servers)

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

    # -- units of work --------------------------------------------------------

    def run(self, work: Callable[[Session], T]) -> T:
        """Run `work(session)` in autocommit mode: reads, and changes that
        are one statement each."""
        return self._attempt(work, transaction=False)

    def transaction(self, work: Callable[[Session], T]) -> T:
        """Run `work(session)` as one transaction: all of its changes or
        none.  Committed when `work` returns (unless it committed or rolled
        back itself), rolled back when it raises; run again from the start
        after a deadlock or a certification failure."""
        return self._attempt(work, transaction=True)

    def _attempt(self, work: Callable[[Session], T], transaction: bool) -> T:
        rerun = True
        for attempt in range(_RETRIES):
            conn = self.connection()
            started = self.clock()
            session = Session(conn.cursor(), transaction)
            try:
                result = work(session)
                session.commit()
                self._used_at = self.clock()
                return result
            except DRIVER.OperationalError as e:
                code = e.args[0] if e.args else 0
                if code in RETRY_CODES:
                    self._abandon(session)
                    if code == _NOT_READY:
                        self._fail_over()
                    if attempt + 1 < _RETRIES:
                        self._before_retry(code, attempt)
                        continue
                    raise StoreUnavailable(f"database busy: {e}") from None
                self.discard()
                if code in _LOST_CODES or code in _GONE_CODES:
                    self._fail_over()
                if code in _LOST_CODES and rerun and self._may_rerun(session, started):
                    rerun = False
                    continue
                if code >= 2000 or code in _GONE_CODES:
                    self._pause_after(code, started)
                raise StoreUnavailable(f"database error: {e}") from None
            except (DRIVER.InterfaceError, OSError) as e:
                self._fail_over()
                if rerun and self._may_rerun(session, started):
                    rerun = False
                    continue
                self._pause_after(0, started)
                raise StoreUnavailable(f"database connection lost: {e}") from None
            except BaseException:
                self._abandon(session)
                raise
            finally:
                try:
                    session.cur.close()
                except Exception:
                    pass
        raise AssertionError("unreachable")

    def _before_retry(self, code: int, attempt: int) -> None:
        """Count the retry, and pause a random moment: the transaction that
        won the conflict (maybe at another node) is then likely done."""
        self.retries += 1
        log.info("transaction run again after error %d", code)
        if self.on_retry is not None:
            self.on_retry(code)
        self.sleep(random.uniform(0, min(_BACKOFF_MAX, _BACKOFF * 2 ** attempt)))

    def _abandon(self, session: Session) -> None:
        try:
            session.rollback()
        except Exception:
            self.discard()

    def _may_rerun(self, session: Session, started: float) -> bool:
        """Whether work whose connection broke may run again: nothing it
        sent can have changed the database (an open transaction dies with
        its connection), and the break was not a read timeout (a server
        that hangs would only hang again)."""
        return not session.changed and self.clock() - started < self.timeout

    def _pause_after(self, code: int, started: float) -> None:
        """Fail fast for a moment when the server is going away or hangs
        (it said so, or did not answer within db_timeout); a connection
        that merely broke is reopened by the next request."""
        going_away = code in _GONE_CODES and code not in _LOST_CODES
        if going_away or self.clock() - started >= self.timeout:
            self._failed_at = self.clock()


def placeholders(n: int, one: str = "%s") -> str:
    return ", ".join([one] * n)


def has_table(session: Session, name: str) -> bool:
    session.execute("SELECT 1 FROM information_schema.tables"
                    " WHERE table_schema = DATABASE() AND table_name = %s", (name,))
    return session.fetchone() is not None
