"""Real SIP phones for the integration tests, each in a process of its own:
pjsua2 (pjsua_driver.py, with the test environment's Python), baresip
(driven over its ctrl_tcp module) and Linphone's console client."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from harness import free_port

HERE = os.path.dirname(os.path.abspath(__file__))


class PhoneError(AssertionError):
    pass


class Pjsua:
    """One pjsua2 endpoint (one transport), with any number of accounts."""

    def __init__(self, transport: str, proxy_port: int):
        self.dir = tempfile.mkdtemp(prefix="pa-pjsua-")
        self.log_path = os.path.join(self.dir, "pjsua.log")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "pjsua_driver.py"), transport, str(proxy_port),
             self.log_path],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True)
        self._buffer = b""
        self._read(30)

    def _read(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.proc.stdout], [], [], max(left, 0))
            if not ready:
                raise PhoneError(f"pjsua silent for {timeout}s\n{self.log()}")
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                raise PhoneError(f"pjsua exited ({self.proc.wait()})\n{self.log()}")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            answer = json.loads(line)
        except ValueError:
            # pjsip writes to stdout before its log file is open.
            return self._read(timeout)
        if not answer.get("ok"):
            raise PhoneError(f"pjsua: {answer.get('error')}\n{self.log()}")
        return answer

    def call(self, op: str, timeout: float = 60, **args) -> dict:
        self.proc.stdin.write((json.dumps({"op": op, **args}) + "\n").encode())
        self.proc.stdin.flush()
        return self._read(timeout)

    def log(self, tail: int = 6000) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")[-tail:]
        except FileNotFoundError:
            return ""

    # -- what a test does with it --------------------------------------------

    def account(self, name: str, user: str, domain: str = "127.0.0.1", *,
                register: bool = True, publish: bool = True, expires: int = 300,
                mwi: bool = False) -> int | None:
        return self.call("account", name=name, user=user, domain=domain, register=register,
                         publish=publish, expires=expires, mwi=mwi).get("code")

    def mwi(self, name: str, expect: str = "", timeout: float = 15) -> dict:
        """The last message summary the account's MWI subscription got
        (waiting until its body contains `expect`)."""
        return self.call("mwi_info", timeout=timeout + 30, name=name, expect=expect or None,
                         wait=timeout)

    def status(self, name: str, basic: str, note: str = "", activity: str = "unknown") -> None:
        self.call("status", name=name, basic=basic, note=note, activity=activity)

    def watch(self, name: str, uri: str) -> None:
        self.call("buddy", name=name, uri=uri)

    def shows(self, name: str, uri: str, timeout: float = 15, **expect) -> dict:
        """What the phone shows of the buddy, once it shows `expect` (or
        after `timeout`: the test's assertion then says what it shows)."""
        return self.call("buddy_info", timeout=timeout + 30, name=name, uri=uri,
                         expect=expect, wait=timeout)["info"]

    def unsubscribe(self, name: str, uri: str) -> None:
        self.call("unsubscribe", name=name, uri=uri)

    def unregister(self, name: str) -> int | None:
        return self.call("unregister", name=name).get("code")

    def quit(self) -> None:
        if self.proc.poll() is None:
            try:
                self.call("quit", timeout=30)
            finally:
                self.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.proc.stdin.close()
        self.proc.stdout.close()


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_PRESENCE_STATES = ("Unknown", "Online", "Busy", "Offline")


class Baresip:
    """A baresip (Debian's baresip-core) with its presence module, driven
    over its ctrl_tcp module (netstrings of JSON).  One account; `watch`
    names the contacts whose presence it subscribes to."""

    def __init__(self, user: str, proxy_port: int, transport: str = "udp", watch=()):
        self.dir = tempfile.mkdtemp(prefix="pa-baresip-")
        self.aor = f"sip:{user}@127.0.0.1"
        self.ctrl_port, sip_port = free_port(), _free_pair()
        with open(os.path.join(self.dir, "config"), "w") as f:
            f.write(f"sip_listen 127.0.0.1:{sip_port}\n"
                    "module_path /usr/lib/baresip/modules\n"
                    "module account.so\nmodule contact.so\nmodule menu.so\nmodule presence.so\n"
                    f"module ctrl_tcp.so\nctrl_tcp_listen 127.0.0.1:{self.ctrl_port}\n"
                    "audio_player aufile,/dev/null\naudio_source aufile,/dev/null\n")
        with open(os.path.join(self.dir, "accounts"), "w") as f:
            f.write(f'<{self.aor}>;outbound="sip:127.0.0.1:{proxy_port};transport={transport}"'
                    ";regint=300;pubint=300\n")
        with open(os.path.join(self.dir, "contacts"), "w") as f:
            f.writelines(f'"{uri}" <{uri}>;presence=p2p\n' for uri in watch)
        self.log_path = os.path.join(self.dir, "baresip.log")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(["baresip", "-f", self.dir, "-v"], cwd=self.dir,
                                         stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        self.sock = self._connect(30)
        self._buffer = b""

    def _connect(self, timeout: float) -> socket.socket:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise PhoneError(f"baresip exited ({self.proc.returncode})\n{self.log()}")
            try:
                return socket.create_connection(("127.0.0.1", self.ctrl_port), timeout=30)
            except OSError:
                if time.monotonic() > deadline:
                    raise PhoneError(f"baresip's ctrl_tcp not listening\n{self.log()}")
                time.sleep(0.1)

    def command(self, command: str, params: str = "") -> str:
        """A ctrl_tcp command; returns its output (without colours)."""
        data = json.dumps({"command": command, "params": params, "token": command}).encode()
        self.sock.sendall(b"%d:%s," % (len(data), data))
        while True:
            length, colon, rest = self._buffer.partition(b":")
            if colon and len(rest) > int(length):
                answer = json.loads(rest[:int(length)])
                self._buffer = rest[int(length) + 1:]
                if answer.get("response") and answer.get("token") == command:
                    if not answer.get("ok"):
                        raise PhoneError(f"baresip {command}: {answer.get('data')}")
                    return _ANSI.sub("", answer.get("data") or "")
                continue
            chunk = self.sock.recv(65536)
            if not chunk:
                raise PhoneError(f"baresip closed ctrl_tcp\n{self.log()}")
            self._buffer += chunk

    def registered(self, timeout: float = 15) -> bool:
        deadline = time.monotonic() + timeout
        while "OK" not in self.command("reginfo"):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def status(self, online: bool) -> None:
        self.command("presence_online" if online else "presence_offline")

    def shows(self, uri: str, expect: str, timeout: float = 15) -> str:
        """The status the contacts list shows for uri (Online, Offline,
        Busy, Unknown), once it shows `expect` or after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            line = next((line for line in self.command("contacts").splitlines()
                         if f"<{uri}>" in line), "")
            shown = next((word for word in line.split() if word in _PRESENCE_STATES), "")
            if shown == expect or time.monotonic() > deadline:
                return shown
            time.sleep(0.1)

    def log(self, tail: int = 6000) -> str:
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")[-tail:]

    def quit(self) -> None:
        """As a user quits: un-PUBLISH, un-REGISTER, un-SUBSCRIBE."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        _quit(self.proc)
        self.close()

    def close(self) -> None:
        self.sock.close()
        _kill(self.proc)


def _free_pair() -> int:
    """A free port whose successor is free too: baresip also listens for
    TLS on the next port, and fails to start where that is taken."""
    while True:
        port = free_port()
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue


class Linphone:
    """Linphone's console client (Debian's linphone-cli), one account
    through the proxy, driven over stdin; what it prints is collected."""

    def __init__(self, user: str, domain: str, proxy_port: int, transport: str = "udp"):
        self.dir = tempfile.mkdtemp(prefix="pa-linphone-")
        self.aor = f"sip:{user}@{domain}"
        # Linphone keeps its friends in a database there; without the
        # folder it never starts its network side.
        os.makedirs(os.path.join(self.dir, ".local", "share", "linphone"))
        rc = os.path.join(self.dir, "linphonerc")
        proxy = f"sip:127.0.0.1:{proxy_port};transport={transport}"
        with open(rc, "w") as f:
            f.write(f"[sip]\nsip_port={free_port() if transport == 'udp' else 0}\n"
                    f"sip_tcp_port={free_port() if transport == 'tcp' else 0}\n"
                    "sip_tls_port=0\ndefault_proxy=0\n"
                    f"[proxy_0]\nreg_proxy=<{proxy}>\nreg_route=<{proxy};lr>\n"
                    f"reg_identity={self.aor}\nreg_expires=300\nreg_sendregister=1\n"
                    "publish=1\n[sound]\ncapture_dev_id=\nplayback_dev_id=\n")
        self.log_path = os.path.join(self.dir, "linphone.log")
        self.proc = subprocess.Popen(
            ["linphonec", "-c", rc, "-d", "6", "-l", self.log_path], cwd=self.dir,
            env=dict(os.environ, HOME=self.dir), stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        self.output: list[str] = []
        self._lock = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for raw in self.proc.stdout:
            with self._lock:
                self.output.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._lock.notify_all()

    def send(self, line: str) -> None:
        self.proc.stdin.write((line + "\n").encode())
        self.proc.stdin.flush()

    def wait_for(self, pattern: str, timeout: float = 20, start: int = 0) -> re.Match | None:
        """The first printed line from `start` on matching `pattern`."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                for line in self.output[start:]:
                    m = re.search(pattern, line)
                    if m:
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._lock.wait(left)

    def registered(self, timeout: float = 20) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            mark = len(self.output)
            self.send("status register")
            if self.wait_for(r"^registered, identity=", 2, mark):
                return True
            time.sleep(0.2)
        return False

    def watch(self, name: str, uri: str) -> None:
        self.send(f'friend add "{name}" {uri}')

    def shows(self, name: str, status: str, start: int = 0, timeout: float = 20) -> bool:
        """Whether it printed `Friend "name" <uri> is <status>` (from the
        line numbered `start` on)."""
        return self.wait_for(rf'^(linphonec> )?Friend "{re.escape(name)}" <[^>]+> is {status}$',
                             timeout, start) is not None

    def log(self, tail: int = 6000) -> str:
        return "\n".join(self.output)[-tail:]

    def quit(self) -> None:
        if self.proc.poll() is None:
            self.send("quit")
        _quit(self.proc)
        self.close()

    def close(self) -> None:
        _kill(self.proc)
        self.proc.stdin.close()


def _quit(proc: subprocess.Popen, timeout: float = 30) -> None:
    """Give a phone told to quit the time to say goodbye on the network."""
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pass


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
