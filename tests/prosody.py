"""A real XMPP server for the integration tests: a private Prosody (Debian's
`prosody` 0.12) per test module, with its own config, data and free ports on
127.0.0.1, so tests never touch /etc/prosody or a system Prosody."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time

from harness import Process, free_port

PROSODY = shutil.which("prosody") or "/usr/bin/prosody"
PROSODYCTL = shutil.which("prosodyctl") or "/usr/bin/prosodyctl"


def _lua(value: str) -> str:
    """A Lua string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


class Prosody(Process):
    """A private Prosody: its own config, data and ports, on 127.0.0.1."""

    def __init__(self, domain: str = "xmpp.example.org", component: str = "sip.example.org",
                 component_secret: str = "s3cret"):
        self.domain = domain
        self.component = component
        self.component_secret = component_secret
        self.c2s_port = free_port()
        self.component_port = free_port()
        while self.component_port == self.c2s_port:
            self.component_port = free_port()
        self.dir = tempfile.mkdtemp(prefix="pa-prosody-")
        self.config_path = os.path.join(self.dir, "prosody.cfg.lua")
        self.data_path = os.path.join(self.dir, "data")
        self.log_path = os.path.join(self.dir, "prosody.log")
        self.pid_path = os.path.join(self.dir, "prosody.pid")
        # An empty certificate directory: without one Prosody logs an
        # error indexing the default ./certs next to the config.
        self.certs_path = os.path.join(self.dir, "certs")
        os.makedirs(self.data_path)
        os.makedirs(self.certs_path)
        with open(self.config_path, "w") as f:
            f.write(self.config())
        self.proc: subprocess.Popen | None = None

    def config(self) -> str:
        return f"""\
-- A private Prosody for one test module (tests/prosody.py).
-- The tests run as root; without this mod_posix refuses to start and
-- prosodyctl would switch to the 'prosody' user, who cannot write here.
run_as_root = true
pidfile = {_lua(self.pid_path)}
data_path = {_lua(self.data_path)}
certificates = {_lua(self.certs_path)}
plugin_paths = {{ }}

-- Loopback only, on our own ports; the system's 5222/5269/5347/5280 stay free.
interfaces = {{ "127.0.0.1" }}
local_interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {self.c2s_port} }}
c2s_direct_tls_ports = {{ }}
legacy_ssl_ports = {{ }}
component_interfaces = {{ "127.0.0.1" }}
component_ports = {{ {self.component_port} }}
s2s_ports = {{ }}
http_ports = {{ }}
https_ports = {{ }}

-- No "tls": without certificates there is nothing to offer, and the
-- clients log in in plain text on loopback. s2s and http are not needed.
modules_enabled = {{ "roster", "presence", "saslauth", "disco", "ping" }}
modules_disabled = {{ "s2s", "s2s_auth_certs", "http" }}

authentication = "internal_plain"
storage = "internal"
c2s_require_encryption = false
allow_unencrypted_plain_auth = true

log = {{ {{ levels = {{ min = "debug" }}, to = "file", filename = {_lua(self.log_path)} }} }}

VirtualHost {_lua(self.domain)}

Component {_lua(self.component)}
    component_secret = {_lua(self.component_secret)}
"""

    def start(self, timeout: float = 15.0) -> "Prosody":
        # Output before logging is set up (config errors) lands in the same file.
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([PROSODY, "-F", "--config", self.config_path],
                                     stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prosody exited ({self.proc.returncode}):\n{self.log()[-3000:]}")
            if self._accepts(self.c2s_port) and self._accepts(self.component_port):
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"prosody not listening on {self.c2s_port} and {self.component_port}:\n"
                           f"{self.log()[-3000:]}")

    @staticmethod
    def _accepts(port: int) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False

    def register(self, user: str, password: str) -> None:
        """An account user@domain, written straight into data_path (works
        whether the server runs or not: internal storage is read per use)."""
        result = subprocess.run([PROSODYCTL, "--config", self.config_path, "register",
                                 user, self.domain, password],
                                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
        if result.returncode != 0:
            raise RuntimeError(f"prosodyctl register {user}@{self.domain} failed ({result.returncode}):\n"
                               f"{result.stdout}{result.stderr}")


    def cleanup(self) -> None:
        self.stop()
        if not os.environ.get("PA_TEST_KEEP_LOGS"):
            shutil.rmtree(self.dir, ignore_errors=True)
