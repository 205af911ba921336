"""Child processes of the benchmark: every server and load generator is
started through `spawn`, so that whatever happens (an exception, Ctrl-C,
SIGTERM) `kill_all` leaves nothing running behind us; and the CPU time a
process tree consumed, read from /proc."""

from __future__ import annotations

import atexit
import os
import signal
import subprocess

CLK_TCK = os.sysconf("SC_CLK_TCK")

_children: list[subprocess.Popen] = []


def spawn(cmd: list[str], log_path: str, **kwargs) -> subprocess.Popen:
    """Start `cmd` in a session of its own (so that its whole process group
    can be killed), stdout and stderr appended to `log_path`."""
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, **kwargs)
    _children.append(proc)
    return proc


def stop(proc: subprocess.Popen | None, timeout: float = 15.0) -> None:
    """SIGTERM, then SIGKILL the process group if it lingers."""
    if proc is None:
        return
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    # Kamailio's children may outlive a killed main process: clear the group.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass
    if proc in _children:
        _children.remove(proc)


def kill_all() -> None:
    for proc in list(reversed(_children)):
        stop(proc, timeout=5)


class Interrupted(BaseException):
    """SIGTERM or SIGHUP arrived.  A BaseException, like KeyboardInterrupt,
    so that the `except Exception` keeping one failed benchmark from
    stopping the others lets it through."""


def _on_signal(signum, frame):
    raise Interrupted(signal.Signals(signum).name)


def install_handlers() -> None:
    atexit.register(kill_all)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    # Python leaves SIGINT ignored when it started ignored (a background
    # job of a script); Ctrl-C and `kill -INT` must stop us all the same.
    signal.signal(signal.SIGINT, signal.default_int_handler)


# -- CPU accounting ---------------------------------------------------------

def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    # The command name (field 2) may contain spaces: split after its ')'.
    return data[data.rindex(")") + 2:].split()


def descendants(root: int) -> list[int]:
    """`root` and every process below it."""
    parents: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = _stat(int(name))
            if fields:
                parents.setdefault(int(fields[1]), []).append(int(name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(parents.get(pid, []))
    return found


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes (all their threads), in seconds."""
    total = 0
    for pid in pids:
        fields = _stat(pid)
        if fields:
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / CLK_TCK


def cpu_delta(before: tuple[float, ...], after: tuple[float, ...], operations: int) -> dict:
    """What a measured window cost: CPU seconds of Kamailio and of mariadbd,
    their sum, and the sum per 1000 operations."""
    kamailio, mariadb = (a - b for a, b in zip(after, before))
    return {"cpu_s": round(kamailio + mariadb, 3), "cpu_kamailio_s": round(kamailio, 3),
            "cpu_mariadb_s": round(mariadb, 3),
            "cpu_per_1000": round((kamailio + mariadb) / operations * 1000, 4) if operations else None}


def rss_bytes(pid: int) -> int | None:
    """Resident set size of a process (VmRSS), or None when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None
