"""Real SIP phones for the integration tests, each in a process of its own:
pjsua2 (pjsua_driver.py, with the test environment's Python), baresip
(driven over its ctrl_tcp module) and Linphone's console client."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time

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
                register: bool = True, publish: bool = True, expires: int = 300) -> int | None:
        return self.call("account", name=name, user=user, domain=domain, register=register,
                         publish=publish, expires=expires).get("code")

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
