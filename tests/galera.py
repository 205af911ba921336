"""A three-node MariaDB Galera cluster on loopback, for the tests and for
an operator who wants to try the agent on one (bin/pa-galera).

Each node is a `mariadbd` of its own: data directory, socket, SQL port,
group communication port (gmcast), IST and SST (rsync) receive addresses,
all under one directory in /tmp, started without systemd as the mysql
user.  The first node bootstraps the cluster (--wsrep-new-cluster), the
others join it and get their data by rsync.  Only the processes started
here are ever stopped or killed (by their pid).

    cluster = GaleraCluster().start()
    cluster.nodes[0].port               # SQL port of node 1
    cluster.kill(1)                     # SIGKILL node 2, as a crash would
    cluster.restart(1)                  # it rejoins (IST, or SST)
    cluster.cleanup()
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pymysql

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import free_port  # noqa: E402

PROVIDER = "/usr/lib/galera/libgalera_smm.so"
STATE_FILE = "cluster.json"


def _free_tcp_ports(n: int, taken: set[int]) -> list[int]:
    ports = []
    while len(ports) < n:
        port = free_port()
        if port not in taken and port not in ports:
            ports.append(port)
    return ports


class GaleraNode:
    """One mariadbd of the cluster."""

    def __init__(self, cluster: "GaleraCluster", index: int, ports: dict):
        self.cluster = cluster
        self.index = index
        self.name = f"node{index + 1}"
        self.dir = os.path.join(cluster.dir, self.name)
        self.datadir = os.path.join(self.dir, "data")
        self.socket = os.path.join(self.dir, "sock")
        self.log_path = os.path.join(self.dir, "mariadbd.log")
        self.pid_path = os.path.join(self.dir, "mariadbd.pid")
        self.port = ports["sql"]
        self.gmcast = ports["gmcast"]
        self.ist = ports["ist"]
        self.sst = ports["sst"]
        self.proc: subprocess.Popen | None = None

    def ports(self) -> dict:
        return dict(sql=self.port, gmcast=self.gmcast, ist=self.ist, sst=self.sst)

    def command(self, bootstrap: bool) -> list[str]:
        cluster = self.cluster
        provider_options = ";".join([
            f"gmcast.listen_addr=tcp://127.0.0.1:{self.gmcast}",
            f"ist.recv_addr=127.0.0.1:{self.ist}",
            "gcache.size=64M",
            # A dead node is noticed within about two seconds, not five to
            # fifteen: while the others have not noticed, their commits wait.
            "evs.keepalive_period=PT0.5S", "evs.inactive_check_period=PT0.5S",
            "evs.suspect_timeout=PT2S", "evs.inactive_timeout=PT3S",
            "evs.install_timeout=PT3S",
            "pc.wait_prim_timeout=PT10S",
        ])
        peers = ",".join(f"127.0.0.1:{n.gmcast}" for n in cluster.nodes)
        command = [
            "/usr/sbin/mariadbd", "--no-defaults", f"--datadir={self.datadir}",
            f"--socket={self.socket}", f"--port={self.port}", "--bind-address=127.0.0.1",
            f"--pid-file={self.pid_path}", "--user=mysql", "--skip-name-resolve",
            f"--log-error={self.log_path}", "--innodb-buffer-pool-size=32M",
            "--innodb-log-file-size=16M", "--max-connections=300",
            "--wsrep-on=ON", f"--wsrep-provider={PROVIDER}",
            f"--wsrep-cluster-name={cluster.name}",
            f"--wsrep-cluster-address=gcomm://{peers}",
            f"--wsrep-node-name={self.name}", "--wsrep-node-address=127.0.0.1",
            f"--wsrep-node-incoming-address=127.0.0.1:{self.port}",
            f"--wsrep-provider-options={provider_options}",
            "--wsrep-sst-method=rsync", f"--wsrep-sst-receive-address=127.0.0.1:{self.sst}",
            "--binlog-format=ROW", "--default-storage-engine=InnoDB",
            "--innodb-autoinc-lock-mode=2", "--innodb-flush-log-at-trx-commit=2",
            "--wsrep-slave-threads=2",
        ]
        if bootstrap:
            command.append("--wsrep-new-cluster")
        return command

    # -- the process -----------------------------------------------------

    def start(self, bootstrap: bool = False) -> None:
        os.makedirs(self.dir, exist_ok=True)
        shutil.chown(self.dir, "mysql", "mysql")
        if bootstrap and not os.path.isdir(os.path.join(self.datadir, "mysql")):
            done = subprocess.run(["mariadb-install-db", "--no-defaults",
                                   f"--datadir={self.datadir}", "--user=mysql",
                                   "--auth-root-authentication-method=normal", "--skip-test-db"],
                                  capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
            if done.returncode != 0:
                raise RuntimeError(f"mariadb-install-db failed for {self.name}:\n"
                                   + done.stderr.decode("utf-8", "replace")[-2000:])
        elif not os.path.isdir(self.datadir):
            # A joiner: the donor sends everything (SST by rsync).
            os.makedirs(self.datadir)
            shutil.chown(self.datadir, "mysql", "mysql")
        if bootstrap:
            self._safe_to_bootstrap()
        self.proc = subprocess.Popen(self.command(bootstrap), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)

    def _safe_to_bootstrap(self) -> None:
        """A whole cluster started again: its first node may bootstrap."""
        path = os.path.join(self.datadir, "grastate.dat")
        if os.path.exists(path):
            with open(path) as f:
                text = f.read()
            with open(path, "w") as f:
                f.write(text.replace("safe_to_bootstrap: 0", "safe_to_bootstrap: 1"))

    def pid(self) -> int | None:
        if self.proc is not None:
            return self.proc.pid if self.proc.poll() is None else None
        try:
            with open(self.pid_path) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            return None
        return pid if _is_our_mariadbd(pid, self.datadir) else None

    def running(self) -> bool:
        return self.pid() is not None

    def kill(self) -> None:
        """SIGKILL, as a crash or a power cut would end it."""
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            self._wait_gone(pid, 10)

    def stop(self, timeout: float = 60) -> None:
        pid = self.pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        if not self._wait_gone(pid, timeout):
            os.kill(pid, signal.SIGKILL)
            self._wait_gone(pid, 10)

    def _wait_gone(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.pid == pid:
                if self.proc.poll() is not None:
                    return True
            elif not _is_our_mariadbd(pid, self.datadir):
                return True
            time.sleep(0.05)
        return False

    # -- SQL -------------------------------------------------------------

    def admin(self, timeout: float = 2) -> pymysql.connections.Connection:
        return pymysql.connect(unix_socket=self.socket, user="root", password="",
                               autocommit=True, connect_timeout=timeout)

    def client(self) -> list[str]:
        return ["mysql", "--no-defaults", "-uroot", f"--socket={self.socket}"]

    def status(self) -> dict[str, str]:
        """wsrep status of this node ({} when it does not answer)."""
        try:
            with self.admin() as conn, conn.cursor() as cur:
                cur.execute("SHOW GLOBAL STATUS LIKE 'wsrep_%'")
                return {k: v for k, v in cur.fetchall()}
        except pymysql.err.MySQLError:
            return {}

    def synced(self, size: int | None = None) -> bool:
        status = self.status()
        return (status.get("wsrep_ready") == "ON"
                and status.get("wsrep_local_state_comment") == "Synced"
                and status.get("wsrep_cluster_status") == "Primary"
                and (size is None or status.get("wsrep_cluster_size") == str(size)))


def _is_our_mariadbd(pid: int, datadir: str) -> bool:
    """Whether `pid` is a mariadbd running on this data directory (a pid
    file may outlive its process, and the pid be reused)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().decode("utf-8", "replace").split("\0")
    except OSError:
        return False
    return bool(args) and args[0].endswith("mariadbd") and f"--datadir={datadir}" in args


class GaleraCluster:
    """Three Galera nodes on 127.0.0.1, in a directory of their own."""

    def __init__(self, directory: str | None = None, size: int = 3):
        self.dir = directory or tempfile.mkdtemp(prefix="pa-galera-")
        os.makedirs(self.dir, exist_ok=True)
        shutil.chown(self.dir, "mysql", "mysql")
        state = self._load()
        if state:
            self.name = state["name"]
            ports = state["nodes"]
        else:
            self.name = "pa_" + os.path.basename(self.dir).replace("-", "_")
            taken: set[int] = set()
            ports = []
            for _ in range(size):
                sql, gmcast, ist, sst = _free_tcp_ports(4, taken)
                taken |= {sql, gmcast, ist, sst}
                ports.append(dict(sql=sql, gmcast=gmcast, ist=ist, sst=sst))
        self.nodes = [GaleraNode(self, i, p) for i, p in enumerate(ports)]
        self._save()

    def _load(self) -> dict | None:
        try:
            with open(os.path.join(self.dir, STATE_FILE)) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def _save(self) -> None:
        with open(os.path.join(self.dir, STATE_FILE), "w") as f:
            json.dump(dict(name=self.name, nodes=[n.ports() for n in self.nodes]), f)

    def start(self, timeout: float = 120) -> "GaleraCluster":
        """Bootstrap the first node, then let the others join one at a time
        (two SSTs from one donor at once would queue anyway)."""
        first, *others = self.nodes
        if not first.running():
            first.start(bootstrap=True)
        self.wait_synced(first, 1, timeout)
        for n, node in enumerate(others, start=2):
            if node.running():
                self.wait_synced(node, n, timeout)
                continue
            try:
                node.start()
                self.wait_synced(node, n, timeout)
            except RuntimeError as first:
                # A state transfer that failed (its receive port taken
                # meanwhile by another program of this shared machine):
                # once more, from nothing, on other ports.
                node.kill()
                shutil.rmtree(node.datadir, ignore_errors=True)
                node.ist, node.sst = _free_tcp_ports(2, self._ports())
                self._save()
                node.start()
                try:
                    self.wait_synced(node, n, timeout)
                except RuntimeError as second:
                    raise second from first
        return self

    def _ports(self) -> set[int]:
        return {p for node in self.nodes for p in node.ports().values()}

    def wait_synced(self, node: GaleraNode, size: int | None = None,
                    timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not node.synced(size):
            if not node.running() or time.monotonic() > deadline:
                lines = self.log(node).splitlines()
                errors = [line for line in lines if "ERROR" in line][-15:]
                raise RuntimeError(f"Galera {node.name} did not join"
                                   f" ({'exited' if not node.running() else 'timed out'}):\n"
                                   + "\n".join(errors + lines[-15:]))
            time.sleep(0.1)

    def kill(self, index: int) -> None:
        self.nodes[index].kill()

    def restart(self, index: int, timeout: float = 120) -> None:
        """Start a node that was stopped or killed: it rejoins the others,
        by IST when their gcache still holds what it missed, else SST."""
        node = self.nodes[index]
        node.start()
        self.wait_synced(node, len(self.nodes), timeout)

    def wait_size(self, size: int, timeout: float = 30) -> None:
        """Until every running node sees a primary component of `size`."""
        deadline = time.monotonic() + timeout
        while True:
            live = [n for n in self.nodes if n.running()]
            if all(n.synced(size) for n in live):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"cluster size not {size}: "
                                   + str({n.name: n.status().get("wsrep_cluster_size") for n in live}))
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop the joiners first, the first node last (it is then the one
        safe to bootstrap from)."""
        for node in reversed(self.nodes):
            node.stop()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log(self, node: GaleraNode) -> str:
        try:
            with open(node.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def describe(self) -> list[dict]:
        rows = []
        for node in self.nodes:
            status = node.status()
            rows.append(dict(node=node.name, pid=node.pid(), port=node.port,
                             socket=node.socket,
                             state=status.get("wsrep_local_state_comment", "down"),
                             cluster_size=status.get("wsrep_cluster_size", "-"),
                             cluster=status.get("wsrep_cluster_status", "-")))
        return rows

    def database(self, name: str, user: str, password: str) -> None:
        """A database and a user allowed from 127.0.0.1 (created on one
        node, replicated to all)."""
        with self.nodes[0].admin() as conn, conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE IF NOT EXISTS `{name}`")
            cur.execute(f"CREATE USER IF NOT EXISTS '{user}'@'127.0.0.1' IDENTIFIED BY '{password}'")
            cur.execute(f"GRANT ALL ON `{name}`.* TO '{user}'@'127.0.0.1'")


# -- pytest ---------------------------------------------------------------

try:
    import pytest
except ImportError:         # bin/pa-galera runs without pytest
    pytest = None

if pytest is not None:
    @pytest.fixture(scope="session")
    def galera_cluster():
        """One three-node cluster for the whole test session (it takes
        about ten seconds to form); tests that kill a node restart it."""
        cluster = GaleraCluster()
        try:
            cluster.start()
        except BaseException:
            # The nodes that did start must not outlive the session.
            cluster.stop()
            raise
        yield cluster
        if os.environ.get("PA_TEST_KEEP_LOGS"):
            cluster.stop()
        else:
            cluster.cleanup()


# -- bin/pa-galera ----------------------------------------------------------

DEFAULT_DIR = "/tmp/pa-galera"


def _print_status(cluster: GaleraCluster) -> bool:
    up = True
    for row in cluster.describe():
        print("{node}: pid {pid}, port {port}, socket {socket}: {state}, "
              "{cluster} component of {cluster_size}".format(**row))
        up = up and row["state"] == "Synced"
    return up


def main(argv: list[str]) -> int:
    import argparse
    parser = argparse.ArgumentParser(
        prog="pa-galera", description="A three-node MariaDB Galera cluster on 127.0.0.1 "
        "to try the presence agent on (not for production).")
    parser.add_argument("--dir", default=os.environ.get("PA_GALERA_DIR", DEFAULT_DIR),
                        help=f"where its data and state live (default {DEFAULT_DIR})")
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", help="start (or rejoin) every node")
    start.add_argument("--database", default="presence",
                       help="create this database and user (password = name), with the schema")
    sub.add_parser("stop", help="stop every node (the data stays)")
    sub.add_parser("status", help="each node's state")
    for name, what in (("kill", "SIGKILL node N (1-3)"), ("restart", "start node N again")):
        p = sub.add_parser(name, help=what)
        p.add_argument("node", type=int, choices=(1, 2, 3))
    sub.add_parser("destroy", help="stop every node and delete the directory")
    args = parser.parse_args(argv)

    if args.command in ("stop", "status", "kill", "restart", "destroy") \
            and not os.path.exists(os.path.join(args.dir, STATE_FILE)):
        print(f"pa-galera: no cluster in {args.dir}", file=sys.stderr)
        return 1
    cluster = GaleraCluster(args.dir)
    if args.command == "start":
        cluster.start()
        if args.database:
            name = args.database
            fresh = not _has_schema(cluster, name)
            cluster.database(name, name, name)
            if fresh:
                from harness import apply_schema
                apply_schema(name, cluster.nodes[0].client())
            hosts = ",".join(f"127.0.0.1:{n.port}" for n in cluster.nodes)
            print(f"db_url: mysql://{name}:{name}@{hosts}/{name}")
        return 0 if _print_status(cluster) else 1
    if args.command == "status":
        return 0 if _print_status(cluster) else 3
    if args.command == "kill":
        cluster.kill(args.node - 1)
    elif args.command == "restart":
        cluster.restart(args.node - 1)
    elif args.command == "stop":
        cluster.stop()
    elif args.command == "destroy":
        cluster.cleanup()
        return 0
    _print_status(cluster)
    return 0


def _has_schema(cluster: GaleraCluster, name: str) -> bool:
    with cluster.nodes[0].admin() as conn, conn.cursor() as cur:
        cur.execute("SELECT 1 FROM information_schema.tables"
                    " WHERE table_schema = %s AND table_name = 'pa_schema'", (name,))
        return cur.fetchone() is not None


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
