"""Real components for the integration tests: a private MariaDB database
per test module, Kamailio processes running our configs, and a TCP proxy in
front of MariaDB that a test can cut to simulate a database outage."""

from __future__ import annotations

import glob
import hashlib
import os
import random
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import pymysql
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE_CFG = os.path.join(ROOT, "kamailio.cfg.sample")
NATIVE_CFG = os.path.join(ROOT, "kemi", "kamailio-native.cfg")
KAMAILIO = shutil.which("kamailio") or "/usr/sbin/kamailio"


def admin_connection(database: str | None = None) -> pymysql.connections.Connection:
    """Root on the local MariaDB: through the socket where root
    authenticates by unix_socket (a fresh Debian install), else TCP."""
    sock = os.environ.get("PA_TEST_MYSQL_SOCKET", "/run/mysqld/mysqld.sock")
    attempts = []
    if os.path.exists(sock):
        attempts.append(dict(unix_socket=sock))
    attempts.append(dict(host=os.environ.get("PA_TEST_MYSQL_HOST", "127.0.0.1"),
                         port=int(os.environ.get("PA_TEST_MYSQL_PORT", "3306"))))
    error = None
    for where in attempts:
        try:
            return pymysql.connect(user="root", password=os.environ.get("PA_TEST_MYSQL_ROOT_PASSWORD", ""),
                                   database=database, autocommit=True, **where)
        except pymysql.err.MySQLError as e:
            error = e
    raise RuntimeError(f"cannot reach MariaDB as root: {error}")


class ScratchDatabase:
    """A database and user of our own, with the schema from sql/ applied
    (or nothing, with schema=False), on the shared MariaDB or on a
    PrivateMariaDB."""

    def __init__(self, schema: bool = True, server: "PrivateMariaDB | None" = None):
        self.name = "pa_t_" + "".join(random.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=10))
        self.user = self.name
        self.password = "pw_" + self.name
        self.host = "127.0.0.1"
        self.port = server.port if server else 3306
        self.server = server
        with self._admin() as conn, conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{self.name}`")
            cur.execute(f"CREATE USER '{self.user}'@'127.0.0.1' IDENTIFIED BY '{self.password}'")
            cur.execute(f"GRANT ALL ON `{self.name}`.* TO '{self.user}'@'127.0.0.1'")
        if schema:
            apply_schema(self.name, server.client() if server else None)

    def _admin(self) -> pymysql.connections.Connection:
        return self.server.admin() if self.server else admin_connection()

    def url(self, port: int | None = None) -> str:
        return f"mysql://{self.user}:{self.password}@{self.host}:{port or self.port}/{self.name}"

    def connect(self) -> pymysql.connections.Connection:
        return pymysql.connect(host=self.host, port=self.port, user=self.user,
                               password=self.password, database=self.name, autocommit=True)

    def query(self, sql: str, args=()) -> list[tuple]:
        with self.connect() as conn, conn.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())

    def add_subscriber(self, user: str, domain: str, password: str) -> None:
        """A SIP user in Kamailio's subscriber table (digest credentials)."""
        ha1 = hashlib.md5(f"{user}:{domain}:{password}".encode()).hexdigest()
        self.query("REPLACE INTO subscriber (username, domain, password, ha1, ha1b)"
                   " VALUES (%s, %s, %s, %s, '')", (user, domain, password, ha1))

    def clear(self) -> None:
        with self.connect() as conn, conn.cursor() as cur:
            for table in ("pa_subscription", "pa_publication", "pa_document", "pa_watcher",
                          "pa_xcap_document"):
                cur.execute(f"DELETE FROM {table}")

    def drop(self) -> None:
        with self._admin() as conn, conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{self.name}`")
            cur.execute(f"DROP USER IF EXISTS '{self.user}'@'127.0.0.1'")


KAMAILIO_SQL = "/usr/share/kamailio/mysql"


def apply_schema(database: str, client: list[str] | None = None) -> None:
    """What the README tells operators: the sql/ files in name order, and
    Kamailio's own tables for the registrar of the sample config."""
    paths = sorted(glob.glob(os.path.join(ROOT, "sql", "*.sql")))
    paths += [os.path.join(KAMAILIO_SQL, name) for name in ("standard-create.sql",
                                                             "usrloc-create.sql",
                                                             "auth_db-create.sql")]
    for path in paths:
        with open(path, "rb") as f:
            subprocess.run((client or _mysql_client()) + [database], stdin=f, check=True)


def _mysql_client() -> list[str]:
    sock = os.environ.get("PA_TEST_MYSQL_SOCKET", "/run/mysqld/mysqld.sock")
    if os.path.exists(sock):
        return ["mysql", "-uroot", f"--socket={sock}"]
    return ["mysql", "-uroot", "-h127.0.0.1"]


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1."""
    for _ in range(100):
        port = random.randint(20000, 45000)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, \
                    socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                u.bind(("127.0.0.1", port))
                t.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port")


class Process:
    """A server the tests run: its own process group, a log file."""

    proc: subprocess.Popen | None = None
    log_path: str = ""

    def start(self):
        raise NotImplementedError

    def stop(self, timeout: float = 15) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""


class PrivateMariaDB(Process):
    """A MariaDB server of a test's own (data directory, socket and port),
    which the test may stop and restart like an operator: the shared
    server the other tests use is never touched."""

    def __init__(self):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="pa-mariadb-")
        self.socket = os.path.join(self.dir, "sock")
        self.log_path = os.path.join(self.dir, "mariadbd.log")
        datadir = os.path.join(self.dir, "data")
        shutil.chown(self.dir, "mysql", "mysql")
        subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={datadir}",
                        "--user=mysql", "--auth-root-authentication-method=normal",
                        "--skip-test-db"], check=True, capture_output=True, timeout=120)
        self.command = ["/usr/sbin/mariadbd", "--no-defaults", f"--datadir={datadir}",
                        f"--socket={self.socket}", f"--port={self.port}",
                        "--bind-address=127.0.0.1", "--user=mysql", "--skip-log-bin",
                        "--skip-name-resolve", "--innodb-buffer-pool-size=32M",
                        f"--log-error={self.log_path}"]

    def start(self, timeout: float = 30.0) -> "PrivateMariaDB":
        self.proc = subprocess.Popen(self.command, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.admin().close()
                return self
            except pymysql.err.MySQLError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"mariadbd did not start:\n{self.log()[-2000:]}")
                time.sleep(0.05)

    def admin(self) -> pymysql.connections.Connection:
        return pymysql.connect(unix_socket=self.socket, user="root", password="",
                               autocommit=True, connect_timeout=2)

    def client(self) -> list[str]:
        return ["mysql", "--no-defaults", "-uroot", f"--socket={self.socket}"]

    def cleanup(self) -> None:
        self.stop(timeout=30)
        shutil.rmtree(self.dir, ignore_errors=True)


class Kamailio(Process):
    """One Kamailio instance running a config of ours in the foreground."""

    def __init__(self, settings: dict, cfg: str = SAMPLE_CFG, port: int | None = None,
                 children: int | None = 2, usrloc_db_url: str | None = None,
                 usrloc_timer: int = 1, shm_mb: int | None = None,
                 env: dict | None = None):
        self.cfg = cfg
        # Kamailio's shared memory (-m), when a test needs to watch it.
        self.shm_mb = shm_mb
        # Environment variables of the configuration, beyond the usual ones.
        self.extra_env = env or {}
        # Kamailio's usrloc needs its database at start; the plugin does not.
        self.usrloc_db_url = usrloc_db_url or settings.get("db_url", "")
        self.usrloc_timer = usrloc_timer
        self.port = port or free_port()
        self.children = children
        self.dir = tempfile.mkdtemp(prefix="pa-kamailio-")
        self.config_path = os.path.join(self.dir, "pa.yaml")
        self.log_path = os.path.join(self.dir, "kamailio.log")
        self.write_settings(settings)
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def write_settings(self, settings: dict | str) -> None:
        with open(self.config_path, "w") as f:
            f.write(settings if isinstance(settings, str) else yaml.safe_dump(settings))

    def env(self) -> dict:
        env = dict(os.environ)
        env.update(PA_HOME=ROOT, PA_CONFIG=self.config_path,
                   PA_LISTEN=f"127.0.0.1:{self.port}", PA_DB_URL=self.usrloc_db_url,
                   PA_REG_MIN_EXPIRES="1", PA_UL_TIMER=str(self.usrloc_timer),
                   # The tests send from one address, faster than any one
                   # client would: test_rate_limit sets a real limit.
                   PA_RATE_LIMIT="1000000")
        env.pop("PA_CHILDREN", None)
        if self.children:
            env["PA_CHILDREN"] = str(self.children)
        env.update(self.extra_env)
        return env

    def start(self, wait: bool = True) -> "Kamailio":
        log = open(self.log_path, "ab")
        memory = ["-m", str(self.shm_mb)] if self.shm_mb else []
        self.proc = subprocess.Popen(
            [KAMAILIO, "-f", self.cfg, "-DD", "-E", "-Y", self.dir, "-w", self.dir] + memory,
            stdout=log, stderr=subprocess.STDOUT, env=self.env(), start_new_session=True)
        log.close()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"kamailio exited ({self.proc.returncode}):\n{self.log()[-3000:]}")
            if self.alive(timeout=0.3):
                return
        raise RuntimeError(f"kamailio not answering on {self.port}:\n{self.log()[-3000:]}")

    def alive(self, timeout: float = 1.0) -> bool:
        """Whether Kamailio answers an OPTIONS over UDP."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            s.settimeout(timeout)
            branch = "z9hG4bK" + str(random.randint(0, 10**12))
            msg = (f"OPTIONS sip:127.0.0.1:{self.port} SIP/2.0\r\n"
                   f"Via: SIP/2.0/UDP 127.0.0.1:{s.getsockname()[1]};branch={branch}\r\n"
                   "Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=p\r\n"
                   f"To: <sip:127.0.0.1:{self.port}>\r\nCall-ID: probe-{branch}\r\n"
                   "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")
            s.sendto(msg.encode(), self.address)
            try:
                return s.recv(4096).startswith(b"SIP/2.0 200")
            except OSError:
                return False

    def rpc(self, *command: str) -> str:
        """kamcmd against this instance's control socket (module ctl)."""
        return subprocess.run(["kamcmd", "-s", f"unix:{self.dir}/kamailio_ctl", *command],
                              capture_output=True, text=True, check=True, timeout=10).stdout

    def wait_exit(self, timeout: float = 15.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise

    def cleanup(self) -> None:
        self.stop()
        if not os.environ.get("PA_TEST_KEEP_LOGS"):
            shutil.rmtree(self.dir, ignore_errors=True)


class TcpProxy:
    """Forwards a local port to MariaDB; `cut()` drops every connection and
    refuses new ones until `restore()`, like a database that went away."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self.restore()

    def restore(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        listener, self._listener = self._listener, None
        if listener:
            # shutdown() wakes the thread blocked in accept(); close alone
            # would leave the port bound until it returns.
            try:
                listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            listener.close()
        with self._lock:
            for s in self._conns:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            self._conns.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    @staticmethod
    def _pump(a: socket.socket, b: socket.socket) -> None:
        peers = {a: b, b: a}
        try:
            while True:
                ready, _, _ = select.select([a, b], [], [], 1.0)
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    peers[s].sendall(data)
        except (OSError, ValueError):
            return
        finally:
            for s in (a, b):
                try:
                    s.close()
                except OSError:
                    pass
