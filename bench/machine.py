"""What the numbers were measured on: CPU, cores, memory, kernel and the
versions of everything in the path of a request; and which code of ours
(the commit, and the files changed since, which the run measured too)."""

from __future__ import annotations

import os
import platform
import subprocess


def _first_line(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, timeout=10, text=True)
        text = (out.stdout or out.stderr).strip()
        return next((l.strip() for l in text.splitlines() if l.strip()), "")
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def _cpuinfo(key: str) -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def _meminfo_gb() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    return 0.0


def describe() -> dict:
    return {
        "cpu_model": _cpuinfo("model name"),
        "cores": os.cpu_count(),
        "ram_gb": _meminfo_gb(),
        "kernel": platform.release(),
        "hostname": platform.node(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "kamailio": _first_line(["kamailio", "-v"]),
        "mariadb": _first_line(["/usr/sbin/mariadbd", "--version"]),
        "python": platform.python_version(),
        "sipp": _first_line(["sipp", "-v"]),
    }


def project(root: str) -> dict:
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", "-C", root, *args], capture_output=True, text=True,
                                  timeout=10).stdout
        except (OSError, subprocess.TimeoutExpired):
            return ""
    # Porcelain lines are "XY path": the status columns may be blank.
    changed = [line[3:] for line in git("status", "--porcelain").splitlines()
               if line[3:] and not line[3:].startswith("bench/")]
    return {"commit": git("rev-parse", "HEAD").strip() or "unknown", "uncommitted_changes": changed}
