"""A private MariaDB for the benchmark: its own data directory, socket and
port on 127.0.0.1, so that the shared server of the tests is never touched
and the CPU of `mariadbd` can be attributed to the benchmark alone."""

from __future__ import annotations

import glob
import os
import pwd
import re
import secrets
import shutil
import subprocess
import tempfile
import time

import pymysql

import procs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KAMAILIO_SQL = "/usr/share/kamailio/mysql"

def schema_files(target: str, config: str) -> list[str]:
    """The SQL files of a target's database, in order: ours first (sql/*.sql
    for `ours`), then Kamailio's standard tables and the tables of every
    module the config loads that has some (usrloc, auth_db, presence...).
    Reading them from the config keeps the benchmark in step with a sample
    configuration that gains modules."""
    files = sorted(glob.glob(os.path.join(ROOT, "sql", "*.sql"))) if target == "ours" else []
    with open(config) as f:
        modules = re.findall(r'^\s*loadmodule\s+"([\w-]+)\.so"', f.read(), re.MULTILINE)
    if any(os.path.exists(os.path.join(KAMAILIO_SQL, f"{m}-create.sql")) for m in modules):
        files.append(os.path.join(KAMAILIO_SQL, "standard-create.sql"))
        files += [os.path.join(KAMAILIO_SQL, f"{m}-create.sql") for m in modules
                  if os.path.exists(os.path.join(KAMAILIO_SQL, f"{m}-create.sql"))]
    return files


# Server variables worth recording next to the results.
REPORTED_VARIABLES = (
    "version", "innodb_buffer_pool_size", "innodb_flush_log_at_trx_commit", "sync_binlog",
    "log_bin", "innodb_flush_method", "innodb_log_file_size", "innodb_doublewrite",
    "max_connections", "thread_handling", "skip_name_resolve", "performance_schema",
)


class MariaDB:
    def __init__(self, port: int, flush_log_at_trx_commit: int | None = None,
                 buffer_pool: str = "512M"):
        self.port = port
        self.dir = tempfile.mkdtemp(prefix="pa-bench-mariadb-")
        self.datadir = os.path.join(self.dir, "data")
        self.socket = os.path.join(self.dir, "sock")
        self.log_path = os.path.join(self.dir, "mariadbd.log")
        self.flags = [
            "--no-defaults", f"--datadir={self.datadir}", f"--socket={self.socket}",
            f"--port={port}", "--bind-address=127.0.0.1", "--user=mysql",
            f"--innodb-buffer-pool-size={buffer_pool}", "--skip-log-bin",
            # No reverse DNS for the 127.0.0.1 connections of Kamailio.
            "--skip-name-resolve",
            f"--pid-file={os.path.join(self.dir, 'mariadbd.pid')}",
            # Temporary tables of its own: nobody else's /tmp cleaning.
            f"--tmpdir={self.dir}",
            # A restart (FLAT, before each case) starts with an empty buffer
            # pool, not the pages the previous case left.
            "--innodb-buffer-pool-dump-at-shutdown=0", "--innodb-buffer-pool-load-at-startup=0",
            f"--log-error={self.log_path}",
        ]
        if flush_log_at_trx_commit is not None:
            self.flags.append(f"--innodb-flush-log-at-trx-commit={flush_log_at_trx_commit}")
        self.proc = None
        self.user = "bench"
        self.password = "pw" + secrets.token_hex(8)
        self.database = "pa_bench"

    # -- server -----------------------------------------------------------

    def start(self, timeout: float = 60.0) -> None:
        mysql = pwd.getpwnam("mysql")
        os.chown(self.dir, mysql.pw_uid, mysql.pw_gid)
        install = subprocess.run(
            ["mariadb-install-db", "--no-defaults", f"--datadir={self.datadir}", "--user=mysql",
             "--auth-root-authentication-method=normal", "--skip-test-db"],
            capture_output=True, timeout=120)
        if install.returncode != 0:
            raise RuntimeError("mariadb-install-db failed: " + install.stderr.decode()[-2000:])
        self._run(timeout)
        with self.admin() as conn, conn.cursor() as cur:
            cur.execute("CREATE USER %s@'127.0.0.1' IDENTIFIED BY %s", (self.user, self.password))
            cur.execute(f"GRANT ALL ON `{self.database}`.* TO %s@'127.0.0.1'", (self.user,))

    def restart(self, timeout: float = 60.0) -> None:
        """Stop and start mariadbd on the same data: a fresh process whose
        memory (RSS) is what the data it serves now takes, not the high-water
        mark of earlier measurements."""
        self.stop()
        self._run(timeout)

    def _run(self, timeout: float) -> None:
        self.proc = procs.spawn(["/usr/sbin/mariadbd"] + self.flags,
                                os.path.join(self.dir, "mariadbd.out"))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mariadbd exited ({self.proc.returncode}): {self.log_tail()}")
            try:
                self.admin().close()
                break
            except pymysql.err.MySQLError:
                time.sleep(0.2)
        else:
            raise RuntimeError("mariadbd did not come up: " + self.log_tail())

    def stop(self) -> None:
        procs.stop(self.proc, timeout=30)
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, n: int = 2000) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")[-n:]
        except OSError:
            return ""

    def settle(self, quiet_cpu: float = 0.02, interval: float = 0.5, max_wait: float = 30.0) -> float:
        """Wait until mariadbd is idle (under `quiet_cpu` CPU seconds per
        `interval`): the background flushing after a schema, a bulk insert
        or seeding must not be charged to the measurement that follows.
        Returns the seconds waited."""
        started = time.monotonic()
        before = procs.cpu_seconds([self.pid])
        while time.monotonic() - started < max_wait:
            time.sleep(interval)
            now = procs.cpu_seconds([self.pid])
            if now - before <= quiet_cpu:
                break
            before = now
        return time.monotonic() - started

    @property
    def pid(self) -> int:
        return self.proc.pid

    # -- connections --------------------------------------------------------

    def admin(self, database: str | None = None) -> pymysql.connections.Connection:
        """root through the socket, no password (install-db's 'normal' auth)."""
        return pymysql.connect(unix_socket=self.socket, user="root", password="",
                               database=database, autocommit=True, connect_timeout=5)

    def connect(self) -> pymysql.connections.Connection:
        """The benchmark user over TCP, as Kamailio connects."""
        return pymysql.connect(host="127.0.0.1", port=self.port, user=self.user,
                               password=self.password, database=self.database,
                               autocommit=True, connect_timeout=5)

    def url(self) -> str:
        return f"mysql://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.database}"

    def variables(self) -> dict:
        with self.admin() as conn, conn.cursor() as cur:
            cur.execute("SHOW GLOBAL VARIABLES")
            values = dict(cur.fetchall())
        return {name: values.get(name) for name in REPORTED_VARIABLES}

    # -- schema -------------------------------------------------------------

    def reset(self, target: str, config: str) -> None:
        """Drop and recreate the database with the schema of `target`,
        whose Kamailio configuration is `config`."""
        with self.admin() as conn, conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{self.database}`")
            cur.execute(f"CREATE DATABASE `{self.database}`")
        for path in schema_files(target, config):
            # The mariadb client, as operators apply these files (the files
            # hold comments and several statements each).
            with open(path, "rb") as f:
                done = subprocess.run(["mariadb", "--no-defaults", "-uroot", f"--socket={self.socket}",
                                       self.database], stdin=f, capture_output=True, timeout=60)
            if done.returncode != 0:
                raise RuntimeError(f"applying {path}: {done.stderr.decode()[-1000:]}")
