"""Benchmark of the presence agent against Kamailio's native presence
modules, on loopback, with a private MariaDB.  Run it with bench/run.

Benchmarks (see bench/README.md):
  B0    stateless SUBSCRIBE answered 200 (bench/ceiling.cfg): the ceiling
  B1    new subscriptions to 500 presentities with published state
  B2    fan-out: 20 PUBLISH modifications to a presentity with 200 / 1000 watchers
  B3    publications: initial PUBLISH + refresh to new presentities
  B4    two nodes on one database (native: subs_db_mode 3): B1's rate search
        over both nodes, fan-out through both, exactly-once expiry under it
  BLF   B2 with Event: dialog, 200 watchers of one extension whose dialog
        state changes by PUBLISH (native: presence_dialoginfo)
  FLAT  ours: CPU per operation with few and with many stored rows
        (subscriptions, publications, presentities with watchers)
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import shutil
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fanout  # noqa: E402
import machine  # noqa: E402
import ports  # noqa: E402
import procs  # noqa: E402
import report  # noqa: E402
import rls  # noqa: E402
import seed  # noqa: E402
import sipp  # noqa: E402
from kamailio import CONFIGS, Kamailio, StartFailed  # noqa: E402
from mariadb import MariaDB  # noqa: E402

BENCHMARKS = ("B0", "B1", "B2", "B3", "B4", "BLF", "RLS", "FLAT")
TARGETS = ("ours", "native", "ceiling")
# Which targets each benchmark runs against.
APPLIES = {"B0": ("ceiling",), "B1": ("ours", "native"), "B2": ("ours", "native"),
           "B3": ("ours", "native"), "B4": ("ours", "native"), "BLF": ("ours", "native"),
           "RLS": ("ours", "native"), "FLAT": ("ours",)}
SCENARIO = {"B0": "subscribe_stateless.xml", "B1": "subscribe.xml", "B3": "publish.xml",
            "B4": "subscribe.xml"}
PRESENTITIES = [f"pres{i}" for i in range(500)]
FANOUT_WATCHERS = (200, 1000)
BLF_WATCHERS = (200,)
FANOUT_STEPS = 20
WARM_UP_CALLS, WARM_UP_RATE = 40, 20.0

# B4: two nodes of each target on the one database.  Native runs in its
# database-only cluster mode (bench/native.cfg with NATIVE_DB_ONLY); ours
# as always, with min_expires lowered so that the expiry check is short.
B4_NODES = 2
B4_DEFINES = {"native": ("NATIVE_DB_ONLY",)}
B4_SETTINGS = {"ours": {"min_expires": 10}}
B4_WATCHERS = 200
B4_EXPIRING = 100
B4_EXPIRY_S = 20
# How often each target looks for expired subscriptions: our
# timer_interval, native's db_update_period (both 10 s).
B4_EXPIRY_PERIOD = 10.0

# FLAT: one operation's CPU with few and with many rows stored.  `many`
# None: --flat-max.  The watched presentities have 2 watchers each.
FLAT_FEW = 1_000
FLAT_KINDS = {
    "subscriptions": {"operation": "B1", "many": None},
    "publications": {"operation": "B3", "many": None},
    "watched": {"operation": "B1", "many": 100_000},
}
FLAT_WATCHERS_EACH = 2


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 3 s steps, one repeat, coarse rate search")
    p.add_argument("--only", default=",".join(BENCHMARKS),
                   help="benchmarks to run, comma-separated (default: all)")
    p.add_argument("--targets", default=",".join(TARGETS),
                   help="targets to run, comma-separated (default: ours,native,ceiling)")
    p.add_argument("--children", type=int, default=4, help="Kamailio worker processes per transport")
    p.add_argument("--repeat", type=int, default=None, help="repetitions of the whole measurement (default 3)")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "out"),
                   help="output directory (default bench/out)")
    p.add_argument("--duration", type=float, default=None, help="seconds of load per rate step (default 10)")
    p.add_argument("--tail", type=float, default=5.0,
                   help="seconds every call must end within after the last started (default 5)")
    p.add_argument("--max-backlog", type=float, default=0.25,
                   help="a step fails when more than this many seconds' worth of calls are "
                        "open at once during the load (default 0.25)")
    p.add_argument("--start-rate", type=float, default=100.0, help="first rate of the search (default 100/s)")
    p.add_argument("--max-rate", type=float, default=20000.0, help="the search stops there (default 20000/s)")
    p.add_argument("--flat-rate", type=float, default=300.0,
                   help="rate of the flatness check (default 300/s, lowered to 80%% of "
                        "ours' B1 or B3 result when that is smaller)")
    p.add_argument("--flat-max", type=int, default=1_000_000,
                   help="stored subscriptions and publications of the flatness check's "
                        "'many' case (default 1 000 000; presentities with watchers: "
                        "100 000 or this, whichever is smaller)")
    p.add_argument("--fanout-subscribe-rate", type=float, default=200.0,
                   help="rate at which the B2 watchers subscribe (default 200/s)")
    p.add_argument("--innodb-flush-log-at-trx-commit", type=int, choices=(0, 1, 2), default=None,
                   help="MariaDB durability (default: the server's, 1)")
    p.add_argument("--shm", type=int, default=256, help="Kamailio shared memory, MB (default 256)")
    p.add_argument("--allocator", choices=("qm", "fm", "tlsf"), default="tlsf",
                   help="Kamailio's memory manager (-x), every target (default tlsf, as bin/pa-run)")
    args = p.parse_args(argv)
    args.only = _choose(args.only, BENCHMARKS, "--only")
    if args.flat_max <= FLAT_FEW:
        p.error(f"--flat-max must be more than {FLAT_FEW}")
    args.targets = _choose(args.targets, TARGETS, "--targets")
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    if args.duration is None:
        args.duration = 3.0 if args.quick else 10.0
    # The search: grow by `factor` until a step fails, then bisect.
    args.factor = 2.0 if args.quick else 1.5
    args.bisections = 1 if args.quick else 3
    return args


def _choose(value: str, known: tuple, option: str) -> list[str]:
    chosen = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [v for v in chosen if v not in known]
    if unknown:
        sys.exit(f"{option}: unknown {', '.join(unknown)} (known: {', '.join(known)})")
    return chosen


def log(text: str) -> None:
    print(time.strftime("%H:%M:%S ") + text, flush=True)


class Bench:
    def __init__(self, args: argparse.Namespace, db: MariaDB, workdir: str):
        self.args = args
        self.db = db
        self.workdir = workdir
        self.logdir = os.path.join(args.out, "logs")
        self.inf = sipp.injection_file(os.path.join(workdir, "presentities.csv"), PRESENTITIES)
        self.failures = 0

    # -- one server ----------------------------------------------------------

    @contextlib.contextmanager
    def server(self, target: str, seed_presentities: bool = False, stored=None):
        """A fresh database and a freshly started Kamailio of `target`; see
        `cluster`.  Yields the Kamailio and the CPU reader."""
        with self.cluster(target, 1, seed_presentities, stored) as (nodes, cpu):
            yield nodes[0], cpu

    @contextlib.contextmanager
    def cluster(self, target: str, nodes: int = 1, seed_presentities: bool = False, stored=None,
                defines: tuple = (), settings: dict | None = None):
        """A fresh database and `nodes` freshly started Kamailios of
        `target` on it, optionally with the 500 presentities published
        (through the first node) and then `stored(conn, port)` storing rows
        in bulk; yields the Kamailios and a reader of the CPU seconds used
        so far by all of them: (Kamailio processes, mariadbd)."""
        self.db.reset(target, CONFIGS[target])
        avoid: set[int] = set()
        started: list[Kamailio] = []
        failed = True
        try:
            for _ in range(nodes):
                port = ports.free_port(*ports.KAMAILIO_PORTS, avoid=avoid)
                avoid.add(port)
                k = Kamailio(target, port, self.db.url(), self.args.children, self.args.shm,
                             self.args.allocator or "", defines=defines, settings=settings)
                started.append(k)
                k.start()
            if seed_presentities:
                done = seed.publish_all(started[0].port, PRESENTITIES)
                if done != len(PRESENTITIES):
                    raise RuntimeError(f"{target}: seeding published {done} of {len(PRESENTITIES)} presentities")
            if stored:
                with self.db.connect() as conn:
                    stored(conn, started[0].port)
                # A bulk insert leaves InnoDB flushing for a while.
                self.db.settle(max_wait=120.0)
            else:
                self.db.settle()
            kamailio_pids = [pid for k in started for pid in k.pids()]
            mariadb_pids = [self.db.pid]
            yield started, lambda: (procs.cpu_seconds(kamailio_pids), procs.cpu_seconds(mariadb_pids))
            failed = False
        finally:
            for i, k in enumerate(started):
                keep = None
                if failed:
                    # Keep the log of a server that failed, for the post-mortem.
                    self.failures += 1
                    os.makedirs(self.logdir, exist_ok=True)
                    keep = os.path.join(self.logdir, f"{target}-{self.failures}.log")
                k.cleanup(keep_log_to=keep)

    # -- B0, B1, B3: highest sustained rate ----------------------------------

    def measure(self, bench: str, port, cpu, rate: float) -> dict:
        """A warm-up of the same scenario, then the measured step, against
        one server port or, spread evenly, several (B4's nodes).  The
        warm-up (WARM_UP_CALLS calls at a low rate) lets every worker open
        its database connection and run its code paths once, so that these
        one-time costs are not charged to the measured operations."""
        inf = self.inf if bench != "B3" else None
        warm = sipp.run_step(SCENARIO[bench], port, WARM_UP_RATE, WARM_UP_CALLS / WARM_UP_RATE,
                             self.workdir, tail=self.args.tail, inf=inf, run="w")
        self.db.settle()
        step = sipp.run_step(SCENARIO[bench], port, rate, self.args.duration, self.workdir,
                             tail=self.args.tail, max_backlog=self.args.max_backlog, inf=inf,
                             cpu=cpu, run="m")
        step["warm_up"] = {"calls": warm["calls"], "successful": warm.get("successful")}
        return step

    def rate_step(self, bench: str, target: str, rate: float) -> dict:
        if bench == "B4":
            with self.cluster(target, B4_NODES, seed_presentities=True,
                              defines=B4_DEFINES.get(target, ()),
                              settings=B4_SETTINGS.get(target)) as (nodes, cpu):
                step = self.measure(bench, [k.port for k in nodes], cpu, rate)
        else:
            with self.server(target, seed_presentities=(bench == "B1")) as (k, cpu):
                step = self.measure(bench, k.port, cpu, rate)
        log(f"[{bench} {target}] {rate:g}/s: {'pass' if step['passed'] else 'FAIL'} "
            f"({step['reason']}; {step.get('successful')}/{step['calls']} ok, "
            f"achieved {step.get('achieved_rate')}/s, CPU {step.get('cpu_per_1000')} s/1000: "
            f"Kamailio {step.get('cpu_kamailio_s')} s + mariadbd {step.get('cpu_mariadb_s')} s)")
        return step

    def search(self, bench: str, target: str, outcome: dict) -> None:
        """Grow the rate by `factor` from `start_rate` until a step fails
        (or come down until one passes), then bisect between the last pass
        and the first failure.  `outcome` is filled as steps complete, so
        that an interrupted run keeps what it measured."""
        a = self.args
        steps = outcome.setdefault("steps", [])

        def run(rate: float) -> bool:
            step = self.rate_step(bench, target, float(round(rate)))
            steps.append(step)
            passing = [s for s in steps if s["passed"]]
            best = max(passing, key=lambda s: s["target_rate"], default=None)
            outcome["best_rate"] = best["target_rate"] if best else 0
            outcome["cpu_per_1000"] = best["cpu_per_1000"] if best else None
            return step["passed"]

        passed, failed = None, None
        rate = a.start_rate
        if run(rate):
            passed = rate
            while rate < a.max_rate:
                rate = min(a.max_rate, round(rate * a.factor))
                if not run(rate):
                    failed = rate
                    break
                passed = rate
        else:
            failed = rate
            # Too fast already: come down until a step passes.
            while rate > 10:
                rate = max(10, round(rate / a.factor))
                if run(rate):
                    passed = rate
                    break
                failed = rate
        if passed is not None and failed is not None:
            for _ in range(a.bisections):
                mid = round((passed + failed) / 2)
                if mid in (passed, failed):
                    break
                if run(mid):
                    passed = mid
                else:
                    failed = mid
        outcome.update(first_failed_rate=failed, capped=failed is None, complete=True)

    # -- B2: fan-out -----------------------------------------------------------

    def fanout(self, target: str, outcome: dict, package: str = "presence") -> None:
        bench, counts = ("B2", FANOUT_WATCHERS) if package == "presence" else ("BLF", BLF_WATCHERS)
        for n in counts:
            with self.server(target) as (k, cpu):
                r = fanout.run(k.port, n, package=package, steps=FANOUT_STEPS,
                               subscribe_rate=self.args.fanout_subscribe_rate, cpu=cpu)
            log(f"[{bench} {target}] {n} watchers: p50 {r.get('p50_ms')} ms, p99 {r.get('p99_ms')} ms, "
                f"{r.get('notifies_per_s')} NOTIFY/s, CPU {r.get('cpu_per_1000')} s/1000, "
                f"{r.get('notifies_received')} NOTIFYs for {r.get('notifies_expected')} expected, "
                f"server UDP drops {r.get('server_udp_drops')}"
                + (f"; {r['error']}" if r.get("error") else ""))
            outcome[str(n)] = r

    # -- B4: two nodes on one database ----------------------------------------

    def multi_node_fanout(self, target: str, outcome: dict) -> None:
        """B2 through both nodes, with B4_EXPIRING subscriptions of
        B4_EXPIRY_S seconds that must each end with exactly one NOTIFY."""
        with self.cluster(target, B4_NODES, defines=B4_DEFINES.get(target, ()),
                          settings=B4_SETTINGS.get(target)) as (nodes, cpu):
            r = fanout.run([k.port for k in nodes], B4_WATCHERS, expiring=B4_EXPIRING,
                           expiry_seconds=B4_EXPIRY_S, steps=FANOUT_STEPS,
                           subscribe_rate=self.args.fanout_subscribe_rate, cpu=cpu,
                           expiry_period=B4_EXPIRY_PERIOD)
        e = r.get("expiry", {})
        log(f"[B4 {target}] fan-out {B4_WATCHERS} watchers over {B4_NODES} nodes, {r.get('steps')} "
            f"PUBLISHes: p50 {r.get('p50_ms')} ms, p99 {r.get('p99_ms')} ms, "
            f"{r.get('notifies_per_s')} NOTIFY/s, {r.get('notifies_per_publish')} NOTIFYs/PUBLISH, "
            f"CPU {r.get('cpu_per_1000')} s/1000; expiry: {e.get('terminated_once')} of "
            f"{e.get('subscriptions')} ended exactly once, {e.get('missing')} missing, "
            f"{e.get('duplicated')} duplicated" + (f"; {r['error']}" if r.get("error") else ""))
        outcome["fanout"] = r

    # -- FLAT: our cost with many stored rows ----------------------------------

    def flatness(self, record: dict, outcome: dict) -> None:
        for kind, spec in FLAT_KINDS.items():
            try:
                self.flat_kind(kind, spec, record, outcome.setdefault(kind, {}))
            except (StartFailed, RuntimeError, OSError) as e:
                log(f"[FLAT ours] {kind} failed: {e}")
                outcome[kind]["error"] = str(e)[-2000:]

    def flat_kind(self, kind: str, spec: dict, record: dict, outcome: dict) -> None:
        op = spec["operation"]
        many = min(spec["many"] or self.args.flat_max, self.args.flat_max)
        rate = self.flat_rate(record, op)
        outcome.update(operation=op, rate=rate, few_rows=FLAT_FEW, many_rows=many)
        for case, count in (("few", FLAT_FEW), ("many", many)):
            store = flat_store(kind, count)
            seeded = {}

            def timed(conn, port):
                t0 = time.monotonic()
                store(conn, port)
                seeded["s"] = round(time.monotonic() - t0, 1)

            # A fresh mariadbd: its RSS below is this case's, not the
            # high-water mark of the cases before.
            self.db.restart()
            with self.server("ours", seed_presentities=True, stored=timed) as (k, cpu):
                step = self.measure(op, k.port, cpu, rate)
                with self.db.connect() as conn:
                    step["db_mb"] = round(seed.database_bytes(conn) / 2**20, 1)
                rss = procs.rss_bytes(self.db.pid)
                step["mariadb_rss_mb"] = round(rss / 2**20, 1) if rss else None
            step["seed_s"] = seeded.get("s")
            outcome[case] = step
            log(f"[FLAT ours] {kind}: {count} stored (seeded in {step['seed_s']} s), {op} at {rate:g}/s: "
                f"{'pass' if step['passed'] else 'FAIL'} ({step['reason']}), CPU "
                f"{step.get('cpu_per_1000')} s/1000: Kamailio {step.get('cpu_kamailio_s')} s + "
                f"mariadbd {step.get('cpu_mariadb_s')} s; database {step['db_mb']} MB, "
                f"mariadbd RSS {step['mariadb_rss_mb']} MB")
        outcome.update(report.flatness(outcome["few"].get("cpu_per_1000"),
                                       outcome["many"].get("cpu_per_1000")))

    # -- one repetition ----------------------------------------------------------

    def repetition(self, record: dict) -> None:
        for bench in self.args.only:
            for target in APPLIES[bench]:
                if target not in self.args.targets:
                    continue
                log(f"== {bench} {target}")
                outcome = record.setdefault(bench, {}).setdefault(target, {})
                try:
                    if bench == "B2":
                        self.fanout(target, outcome)
                    elif bench == "BLF":
                        self.fanout(target, outcome, package="dialog")
                    elif bench == "FLAT":
                        self.flatness(record, outcome)
                    elif bench == "RLS":
                        outcome.update(resource_lists(target, self.args.children))
                    else:
                        self.search(bench, target, outcome)
                        if bench == "B4":
                            self.multi_node_fanout(target, outcome)
                except (StartFailed, RuntimeError, OSError) as e:
                    # A target that does not start or misbehaves is a result,
                    # not the end of the run.
                    log(f"[{bench} {target}] failed: {e}")
                    outcome["error"] = str(e)[-2000:]
                except Exception as e:  # a bug of ours: report it, keep going
                    traceback.print_exc()
                    outcome["error"] = f"{type(e).__name__}: {e}"
                if bench in ("B1", "B3", "B4"):
                    compare_at_common_rate(record[bench])

    def flat_rate(self, record: dict, op: str = "B1") -> float:
        rate = self.args.flat_rate
        ours_best = record.get(op, {}).get("ours", {}).get("best_rate")
        if ours_best:
            rate = min(rate, float(round(0.8 * ours_best)))
        return max(rate, 10.0)


# RLS: bench/rls.py's scenario with its defaults: 50 subscribers, each to
# a list of 10 members from a pool of 40 presentities, 10 changes; native
# is Kamailio's rls with its default waitn_time (5 s), ours
# rls_notify_interval 1 s (its default).
RLS_OPTIONS = dict(subscribers=50, members=10, pool=40, steps=10, timeout=10.0, settle=8.0,
                   notify_interval=1, gap=0.0, waitn_time=5)


def resource_lists(target: str, children: int) -> dict:
    """The RLS benchmark of one target (bench/rls.py, on a private MariaDB
    of its own), with its CPU per 1000 list NOTIFYs."""
    result = rls.run(target, argparse.Namespace(children=children, **RLS_OPTIONS))
    log(f"[RLS {target}] {result}")
    notifies = result["notifies_per_change"] * result["steps"]
    if notifies:
        result["cpu_per_1000"] = round(
            1000 * (result["cpu_kamailio_s"] + result["cpu_mariadb_s"]) / notifies, 4)
    return result


def flat_store(kind: str, count: int):
    """What FLAT stores before measuring: `count` rows of `kind`."""
    if kind == "subscriptions":
        return lambda conn, port: seed.store_subscriptions(conn, count, port)
    if kind == "publications":
        return lambda conn, port: seed.store_publications(conn, count)
    if kind == "watched":
        return lambda conn, port: seed.store_watched(conn, count, FLAT_WATCHERS_EACH, port)
    raise ValueError(kind)


def compare_at_common_rate(outcomes: dict) -> None:
    """CPU per operation falls as the rate rises (batching in Kamailio's
    workers, group commit in MariaDB), so comparing each target at its own
    highest rate mixes two effects.  Both searches step through the same
    rates; record each target's CPU at the highest rate both passed."""
    ours, native = outcomes.get("ours"), outcomes.get("native")
    if not ours or not native:
        return
    passed = [{s["target_rate"]: s for s in o.get("steps", []) if s["passed"]} for o in (ours, native)]
    common = set(passed[0]) & set(passed[1])
    if not common:
        return
    rate = max(common)
    for outcome, steps in zip((ours, native), passed):
        outcome["common_rate"] = rate
        outcome["cpu_per_1000_common"] = steps[rate].get("cpu_per_1000")


def main(argv=None) -> int:
    args = parse_args(argv)
    procs.install_handlers()
    os.makedirs(args.out, exist_ok=True)
    shutil.rmtree(os.path.join(args.out, "logs"), ignore_errors=True)  # a previous run's
    results = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine.describe(),
        "project": machine.project(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "repeats": [],
    }
    workdir = tempfile.mkdtemp(prefix="pa-bench-")
    db = MariaDB(ports.free_port(*ports.MARIADB_PORTS), args.innodb_flush_log_at_trx_commit)
    interrupted = False
    try:
        log(f"starting MariaDB on 127.0.0.1:{db.port}")
        db.start()
        results["mariadb"] = {"flags": db.flags, "variables": db.variables()}
        bench = Bench(args, db, workdir)
        for i in range(args.repeat):
            log(f"=== repetition {i + 1} of {args.repeat}")
            record: dict = {}
            results["repeats"].append(record)
            bench.repetition(record)
    except (KeyboardInterrupt, procs.Interrupted) as e:
        interrupted = True
        log(f"interrupted ({type(e).__name__}): reporting what was measured")
    except Exception as e:  # e.g. MariaDB not starting: still write the report
        traceback.print_exc()
        results["error"] = f"{type(e).__name__}: {e}"[-2000:]
    finally:
        db.cleanup()
        procs.kill_all()
        shutil.rmtree(workdir, ignore_errors=True)
    results["interrupted"] = interrupted
    report.write(results, args.out)
    return 130 if interrupted else (1 if "error" in results else 0)


if __name__ == "__main__":
    sys.exit(main())
