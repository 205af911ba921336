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


def run_step(scenario: str, server_port: int, rate: float, duration: float, workdir: str,
             tail: float = 5.0, max_backlog: float = 0.25, inf: str | None = None,
             cpu=None, run: str = "m") -> dict:
    """`run` becomes [run] in the scenario (sipp -key): distinct values
    keep the presentities of B3's warm-up and measured runs apart."""
    calls = max(1, round(rate * duration))
    stat = os.path.join(workdir, f"stat-{os.getpid()}-{time.monotonic_ns()}.csv")
    errors = stat.replace(".csv", "-errors.log")
    client_port = ports.free_port(*ports.KAMAILIO_PORTS, avoid={server_port})
    cmd = [SIPP, "-sf", os.path.join(SCENARIOS, scenario), "-t", "u1", "-i", "127.0.0.1",
           "-p", str(client_port), "-r", f"{rate:g}", "-m", str(calls),
           # At most `tail` seconds' worth of calls open at once.
           "-l", str(max(20, round(rate * tail))),
           # A call whose next message does not come within `tail` fails.
           "-recv_timeout", str(int(tail * 1000)),
           # Bound the whole run: creation time, the tail, sipp's start-up.
           "-timeout", f"{int(duration * 1.2 + tail + 5)}s", "-timeout_error",
           "-nostdin", "-trace_stat", "-stf", stat, "-fd", "1",
           "-trace_err", "-error_file", errors, "-key", "run", run, f"127.0.0.1:{server_port}"]
    if inf:
        cmd[3:3] = ["-inf", inf]
    drops_before = ports.udp_drops(server_port)
    cpu_before = cpu() if cpu else None
    started = time.time()
    proc = procs.spawn(cmd, os.path.join(workdir, "sipp.out"), cwd=workdir)
    try:
        returncode = proc.wait(duration * 1.2 + tail + 30)
    except subprocess.TimeoutExpired:
        returncode = None
    finally:
        procs.stop(proc, timeout=3)
    cpu_after = cpu() if cpu else None
    result = {"target_rate": rate, "calls": calls, "returncode": returncode,
              # Requests and replies Kamailio's socket lost (sipp's socket is
              # gone once sipp exits).
              "server_udp_drops": ports.udp_drops(server_port) - drops_before}
    result.update(_read_stats(stat, calls, started))
    if cpu:
        result.update(procs.cpu_delta(cpu_before, cpu_after, calls))
    result["passed"], result["reason"] = _verdict(result, rate, tail, max_backlog)
    if not result["passed"]:
        result["errors"] = _error_sample(errors)
    for path in (stat, errors):
        if os.path.exists(path):
            os.remove(path)
    return result


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
