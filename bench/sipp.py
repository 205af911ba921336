"""One rate step with sipp: `rate` calls per second of a scenario for
`duration` seconds, then a verdict.

A step passes when
* at least 99% of the calls succeeded,
* sipp created the calls at >= 95% of the target rate (a server that falls
  behind holds calls open; once `-l` of them are open sipp stops creating
  new ones, and the achieved rate drops), and
* no backlog: while calls were being created, never more than
  `max_backlog` seconds' worth of them were open at once, and every call
  ended within `tail` seconds after the last one was started.
Counts and times come from sipp's statistics file (-trace_stat, one row a
second plus a final one; CurrentTime carries epoch seconds)."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import time

import ports
import procs

SIPP = shutil.which("sipp") or "/usr/bin/sipp"
SCENARIOS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scenarios")


def injection_file(path: str, users: list[str]) -> str:
    """sipp's -inf file: one presentity per line, taken in order by the
    successive calls and wrapping around."""
    with open(path, "w") as f:
        f.write("SEQUENTIAL\n" + "".join(f"{u};\n" for u in users))
    return path


def run_step(scenario: str, server_port: int | list[int], rate: float, duration: float,
             workdir: str, tail: float = 5.0, max_backlog: float = 0.25, inf: str | None = None,
             cpu=None, run: str = "m") -> dict:
    """`run` becomes [run] in the scenario (sipp -key): distinct values
    keep the presentities of B3's warm-up and measured runs apart.

    With several server ports (B4's nodes), one sipp per node runs at an
    equal share of the rate, all at once; the step passes when every one
    of them passes, and its counts are their sums."""
    servers = [server_port] if isinstance(server_port, int) else list(server_port)
    share = rate / len(servers)
    avoid = set(servers)
    parts = []
    for server in servers:
        client_port = ports.free_port(*ports.KAMAILIO_PORTS, avoid=avoid)
        avoid.add(client_port)
        parts.append(_Part(scenario, server, client_port, share, duration, workdir, tail, inf, run))
    drops_before = [ports.udp_drops(p) for p in servers]
    cpu_before = cpu() if cpu else None
    for part in parts:
        part.start()
    for part in parts:
        part.wait(duration * 1.2 + tail + 30)
    cpu_after = cpu() if cpu else None
    results = []
    for part, before in zip(parts, drops_before):
        r = part.result()
        # Requests and replies Kamailio's socket lost (sipp's socket is
        # gone once sipp exits).
        r["server_udp_drops"] = ports.udp_drops(part.server_port) - before
        r["passed"], r["reason"] = _verdict(r, share, tail, max_backlog)
        if not r["passed"]:
            r["errors"] = _error_sample(part.errors)
        part.remove_files()
        results.append(r)
    result = results[0] if len(results) == 1 else merge(results, rate)
    if cpu:
        result.update(procs.cpu_delta(cpu_before, cpu_after, result["calls"]))
    return result


class _Part:
    """One sipp process of a step, against one server."""

    def __init__(self, scenario, server_port, client_port, rate, duration, workdir, tail, inf, run):
        self.server_port = server_port
        self.rate = rate
        self.workdir = workdir
        self.calls = max(1, round(rate * duration))
        self.stat = os.path.join(workdir, f"stat-{os.getpid()}-{time.monotonic_ns()}.csv")
        self.errors = self.stat.replace(".csv", "-errors.log")
        self.cmd = [SIPP, "-sf", os.path.join(SCENARIOS, scenario), "-t", "u1", "-i", "127.0.0.1",
                    "-p", str(client_port), "-r", f"{rate:g}", "-m", str(self.calls),
                    # At most `tail` seconds' worth of calls open at once.
                    "-l", str(max(20, round(rate * tail))),
                    # A call whose next message does not come within `tail` fails.
                    "-recv_timeout", str(int(tail * 1000)),
                    # Bound the whole run: creation time, the tail, sipp's start-up.
                    "-timeout", f"{int(duration * 1.2 + tail + 5)}s", "-timeout_error",
                    "-nostdin", "-trace_stat", "-stf", self.stat, "-fd", "1",
                    "-trace_err", "-error_file", self.errors, "-key", "run", run,
                    f"127.0.0.1:{server_port}"]
        if inf:
            self.cmd[3:3] = ["-inf", inf]
        self.proc = None
        self.returncode = None

    def start(self) -> None:
        self.started = time.time()
        self.proc = procs.spawn(self.cmd, os.path.join(self.workdir, "sipp.out"), cwd=self.workdir)

    def wait(self, timeout: float) -> None:
        try:
            self.returncode = self.proc.wait(max(1.0, self.started + timeout - time.time()))
        except subprocess.TimeoutExpired:
            self.returncode = None
        finally:
            procs.stop(self.proc, timeout=3)

    def result(self) -> dict:
        r = {"target_rate": self.rate, "calls": self.calls, "returncode": self.returncode}
        r.update(_read_stats(self.stat, self.calls, self.started))
        return r

    def remove_files(self) -> None:
        for path in (self.stat, self.errors):
            if os.path.exists(path):
                os.remove(path)


def merge(parts: list[dict], rate: float) -> dict:
    """One step's result from its sipp processes run side by side: counts
    summed, times the longest, passed when every part passed."""
    failing = [(i, p) for i, p in enumerate(parts) if not p["passed"]]
    merged = {
        "target_rate": rate,
        "calls": sum(p["calls"] for p in parts),
        "returncode": None if any(p["returncode"] is None for p in parts)
        else max(p["returncode"] for p in parts),
        "server_udp_drops": sum(p.get("server_udp_drops", 0) for p in parts),
        "passed": not failing,
        "reason": "ok" if not failing else "; ".join(f"node {i}: {p['reason']}" for i, p in failing),
        "parts": parts,
    }
    for key in ("created", "successful", "failed", "achieved_rate", "peak_open_calls"):
        merged[key] = round(sum(p.get(key, 0) for p in parts), 1)
    for key in ("wall_s", "last_call_started_s", "tail_s"):
        values = [p[key] for p in parts if key in p]
        if values:
            merged[key] = max(values)
    if failing:
        merged["errors"] = "\n".join(p.get("errors", "") for _, p in failing)[:3000]
    return merged


def _read_stats(path: str, calls: int, started: float) -> dict:
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f, delimiter=";"))
    except OSError:
        rows = []
    if not rows:
        return {"created": 0, "successful": 0, "failed": calls}

    def at(row):  # "2026-01-01\t10:00:00.123\t1767261600.123" -> epoch
        return float(row["CurrentTime"].split("\t")[-1])

    t0 = float(rows[0]["StartTime"].split("\t")[-1])
    last = rows[-1]
    created = int(last["TotalCallCreated"])
    out = {
        "created": created,
        "successful": int(last["SuccessfulCall(C)"]),
        "failed": int(last["FailedCall(C)"]),
        "wall_s": round(at(last) - t0, 3),
    }
    # When was the last call created?  Interpolate between the row before
    # and the row where creation reached its total.
    previous = (t0, 0)
    for row in rows:
        t, c = at(row), int(row["TotalCallCreated"])
        if c >= created:
            pt, pc = previous
            t_last = pt + (t - pt) * (created - pc) / max(1, c - pc)
            break
        previous = (t, c)
    else:
        t_last = at(last)
    t_last = max(t_last - t0, 1e-3)
    out["last_call_started_s"] = round(t_last, 3)
    out["achieved_rate"] = round(created / t_last, 1) if created > 1 else 0.0
    out["tail_s"] = round(at(last) - t0 - t_last, 3)
    # Calls open at each dump while calls were being created: a server
    # that keeps up holds rate x (a few ms) of them; one that falls behind
    # accumulates them.
    out["peak_open_calls"] = max((int(r["CurrentCall"]) for r in rows if at(r) - t0 <= t_last), default=0)
    out["series"] = [[round(at(r) - t0, 2), int(r["TotalCallCreated"]), int(r["SuccessfulCall(C)"]),
                      int(r["FailedCall(C)"]), int(r["CurrentCall"])] for r in rows]
    return out


def _verdict(r: dict, rate: float, tail: float, max_backlog: float) -> tuple[bool, str]:
    if r["returncode"] is None:
        return False, "sipp did not finish"
    if r["created"] < r["calls"]:
        return False, f"only {r['created']} of {r['calls']} calls created (backlog)"
    if r["successful"] < 0.99 * r["calls"]:
        return False, f"{r['successful']} of {r['calls']} calls succeeded"
    if r["achieved_rate"] < 0.95 * rate:
        return False, f"achieved {r['achieved_rate']}/s of {rate:g}/s"
    if r["peak_open_calls"] > max(20, rate * max_backlog):
        return False, (f"{r['peak_open_calls']} calls open during the load, over "
                       f"{max_backlog:g} s worth (backlog)")
    if r["tail_s"] > tail:
        return False, f"calls still open {r['tail_s']} s after the last was started (backlog)"
    return True, "ok"


def _error_sample(path: str, n: int = 1500) -> str:
    try:
        with open(path, "rb") as f:
            return f.read(n).decode("utf-8", "replace")
    except OSError:
        return ""
