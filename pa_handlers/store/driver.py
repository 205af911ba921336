"""The MySQL client library the store speaks through, and how it reports
that the database cannot be reached."""

from __future__ import annotations

import logging
import os
import time


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

    def ping(self, conn) -> None:
        if self.name == "pymysql":
            conn.ping(reconnect=False)
        else:
            conn.ping()

    def fileno(self, conn) -> int:
        return conn._sock.fileno() if self.name == "pymysql" else conn.fileno()


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
