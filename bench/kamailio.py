"""The three Kamailio targets of the benchmark, each started afresh for
every measurement, with a runtime directory of its own:

* ours:    kamailio.cfg.sample with the presence agent (Python plugin),
* native:  bench/native.cfg, Kamailio's presence + presence_xml modules,
* ceiling: bench/ceiling.cfg, a stateless 200 to every SUBSCRIBE.

B4 runs two nodes of ours or of native on one database: ours as it is,
native with `-A NATIVE_DB_ONLY` (bench/native.cfg: subs_db_mode 3, the
native modules' way of sharing state between nodes).
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import tempfile
import time

import yaml

import procs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
KAMAILIO = shutil.which("kamailio") or "/usr/sbin/kamailio"

CONFIGS = {
    "ours": os.path.join(ROOT, "kamailio.cfg.sample"),
    "native": os.path.join(BENCH, "native.cfg"),
    "ceiling": os.path.join(BENCH, "ceiling.cfg"),
}

# The plugin's settings for `ours`: everyone authorized (as native's
# force_active), the expiry limits the scenarios respect.
OURS_SETTINGS = {"auth": "none", "min_expires": 60, "timer_interval": 10}


class StartFailed(RuntimeError):
    pass


class Kamailio:
    def __init__(self, target: str, port: int, db_url: str, children: int, shm_mb: int,
                 allocator: str = "", defines: tuple[str, ...] = (), settings: dict | None = None):
        self.target = target
        # -A NAME for the config's #!ifdef blocks (native: NATIVE_DB_ONLY).
        self.defines = tuple(defines)
        # Our settings beyond OURS_SETTINGS (B4: a lower min_expires).
        self.settings = dict(settings or {})
        self.allocator = allocator
        self.port = port
        self.db_url = db_url
        self.children = children
        self.shm_mb = shm_mb
        self.dir = tempfile.mkdtemp(prefix=f"pa-bench-{target}-")
        self.log_path = os.path.join(self.dir, "kamailio.log")
        self.proc = None

    def env(self) -> dict:
        env = dict(os.environ)
        # The load comes from one address, far faster than one client's:
        # the sample's per-source rate limit (pike) counts but never blocks.
        env.update(PA_LISTEN=f"127.0.0.1:{self.port}", PA_CHILDREN=str(self.children),
                   PA_DB_URL=self.db_url, PA_HOME=ROOT, PA_RATE_LIMIT="1000000")
        if self.target == "ours":
            settings = dict(OURS_SETTINGS, **self.settings, db_url=self.db_url)
            path = os.path.join(self.dir, "pa.yaml")
            with open(path, "w") as f:
                yaml.safe_dump(settings, f)
            env["PA_CONFIG"] = path
        return env

    def command(self) -> list[str]:
        # -m: the same shared memory for every target, large enough that
        # native's in-memory subscriptions never run out at high rates.
        # -x: the same memory manager for every target (Kamailio's default,
        # qm, when not given).
        allocator = ["-x", self.allocator] if self.allocator else []
        defines = [arg for name in self.defines for arg in ("-A", name)]
        return [KAMAILIO, "-f", CONFIGS[self.target], "-DD", "-E", "-m", str(self.shm_mb),
                *allocator, *defines, "-Y", self.dir, "-w", self.dir]

    def start(self, timeout: float = 30.0) -> None:
        self.proc = procs.spawn(self.command(), self.log_path, env=self.env(), cwd=self.dir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise StartFailed(f"{self.target}: kamailio exited ({self.proc.returncode}): "
                                  + self.diagnosis())
            if options_ok(self.port):
                # Every worker forks before the listeners answer; give the
                # slower (Python) children their child_init.
                time.sleep(0.5)
                return
        raise StartFailed(f"{self.target}: no answer to OPTIONS on {self.port}: " + self.diagnosis())

    def pids(self) -> list[int]:
        return procs.descendants(self.proc.pid)

    def stop(self) -> None:
        procs.stop(self.proc)

    def cleanup(self, keep_log_to: str | None = None) -> None:
        self.stop()
        if keep_log_to and os.path.exists(self.log_path):
            shutil.copy(self.log_path, keep_log_to)
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, n: int = 1500) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")[-n:]
        except OSError:
            return ""

    def diagnosis(self) -> str:
        """The ERROR/CRITICAL lines of the log (the first few), else its end."""
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return "(no log)"
        errors = [l.strip() for l in lines if "ERROR:" in l or "CRITICAL:" in l]
        return " | ".join(errors[:8]) if errors else self.log_tail()


def options_ok(port: int, timeout: float = 0.3) -> bool:
    """Whether something answers an OPTIONS with 200 over UDP."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(timeout)
        branch = "z9hG4bK" + str(random.getrandbits(48))
        msg = (f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
               f"Via: SIP/2.0/UDP 127.0.0.1:{s.getsockname()[1]};branch={branch}\r\n"
               "Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=p\r\n"
               f"To: <sip:127.0.0.1:{port}>\r\nCall-ID: probe-{branch}\r\n"
               "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")
        s.sendto(msg.encode(), ("127.0.0.1", port))
        try:
            return s.recv(4096).startswith(b"SIP/2.0 200")
        except OSError:
            return False
