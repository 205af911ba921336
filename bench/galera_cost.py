"""What a Galera cluster costs per operation, on this machine: B1 (new
subscriptions to 500 presentities with published state) and B3 (initial
PUBLISH + refresh to new presentities) at fixed rates, and B2 (fan-out: 20
PUBLISH modifications of a presentity with 200 watchers, all through the
first node), against

  single  one Kamailio node on one MariaDB server (a private one), and
  galera  two Kamailio nodes, each on its own node of a three-node Galera
          cluster (tests/galera.py), db_sync_wait 7, each node getting
          half the rate from its own sipp;

and the same two for Kamailio's native presence with its subscriptions in
the database only (bench/native.cfg with subs_db_mode 3, what several
native nodes on one database need), "native-single" and "native-galera".

    /usr/bin/python3 bench/galera_cost.py [--rates 100,200,400] [--duration 8]

Every process runs on this machine (the cluster's three mariadbd and the
Kamailio nodes share its cores), so the figures show what the cluster costs
in CPU per operation and where it stops keeping up on one host, not what
three hosts would serve.  Printed as a table; --json writes the steps."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

import fanout  # noqa: E402
import procs  # noqa: E402
import seed  # noqa: E402
import sipp  # noqa: E402
from galera import GaleraCluster  # noqa: E402
from harness import KAMAILIO_SQL, Kamailio, PrivateMariaDB, ScratchDatabase  # noqa: E402

PRESENTITIES = [f"pres{i}" for i in range(500)]
SCENARIO = {"B1": "subscribe.xml", "B3": "publish.xml"}
NATIVE_CFG = os.path.join(HERE, "native.cfg")


class Setup:
    """Kamailio nodes on a database, started afresh for every step."""

    def __init__(self, name: str, servers: list, children: int):
        self.name = name
        self.servers = servers          # PrivateMariaDB, or the Galera nodes used
        self.children = children

    def mariadb_pids(self) -> list[int]:
        return [s.proc.pid if s.proc else s.pid() for s in self.all_servers]

    def start(self, seeded: bool):
        db = ScratchDatabase(server=self.servers[0])
        native = self.name.startswith("native")
        if native:
            with open(os.path.join(KAMAILIO_SQL, "presence-create.sql"), "rb") as f:
                import subprocess
                subprocess.run(self.servers[0].client() + [db.name], stdin=f, check=True)
        nodes = []
        for i, server in enumerate(self.servers):
            url = f"mysql://{db.user}:{db.password}@127.0.0.1:{server.port}/{db.name}"
            settings = dict(db_url=url, auth="none", timer_interval=10)
            if self.name == "galera":
                settings["db_sync_wait"] = 7
            extra = dict(cfg=NATIVE_CFG, env={"PA_NATIVE_DB_ONLY": "1"}) if native else {}
            nodes.append(Kamailio(settings, children=self.children, usrloc_db_url=url,
                                  **extra).start())
        if seeded:
            done = seed.publish_all(nodes[0].port, PRESENTITIES)
            if done != len(PRESENTITIES):
                raise RuntimeError(f"seeding published {done} of {len(PRESENTITIES)}")
        return db, nodes


def fan_out(setup: Setup, watchers: int) -> dict:
    """B2: one presentity, `watchers` watchers, 20 PUBLISH modifications,
    all through the first node (on the cluster, the others apply every
    write all the same)."""
    db, nodes = setup.start(seeded=False)
    try:
        kamailio_pids = [p for k in nodes for p in procs.descendants(k.proc.pid)]
        mariadb_pids = setup.mariadb_pids()
        r = fanout.run(nodes[0].port, watchers, steps=20, subscribe_rate=200,
                       cpu=lambda: (procs.cpu_seconds(kamailio_pids),
                                    procs.cpu_seconds(mariadb_pids)))
        r.update(setup=setup.name, bench="B2")
        return r
    finally:
        for k in nodes:
            k.cleanup()
        db.drop()


def step(setup: Setup, bench: str, rate: float, duration: float, workdir: str) -> dict:
    db, nodes = setup.start(seeded=(bench == "B1"))
    try:
        inf = sipp.injection_file(os.path.join(workdir, "presentities.csv"), PRESENTITIES) \
            if bench == "B1" else None
        share = rate / len(nodes)
        # A warm-up: every worker opens its connection and runs its code once.
        _parallel(nodes, lambda k, n: sipp.run_step(SCENARIO[bench], k.port, 20, 2, workdir,
                                                    inf=inf, run=f"w{n}"))
        kamailio_pids = [p for k in nodes for p in procs.descendants(k.proc.pid)]
        mariadb_pids = setup.mariadb_pids()
        before = (procs.cpu_seconds(kamailio_pids), procs.cpu_seconds(mariadb_pids))
        results = _parallel(nodes, lambda k, n: sipp.run_step(
            SCENARIO[bench], k.port, share, duration, workdir, inf=inf, run=f"m{n}"))
        after = (procs.cpu_seconds(kamailio_pids), procs.cpu_seconds(mariadb_pids))
        calls = sum(r["calls"] for r in results)
        out = dict(setup=setup.name, bench=bench, rate=rate, calls=calls,
                   successful=sum(r.get("successful", 0) for r in results),
                   achieved_rate=round(sum(r.get("achieved_rate", 0) for r in results), 1),
                   passed=all(r["passed"] for r in results),
                   reason="; ".join(sorted({r["reason"] for r in results})),
                   errors=[r.get("errors", "")[:600] for r in results if not r["passed"]])
        out.update(procs.cpu_delta(before, after, calls))
        return out
    finally:
        for k in nodes:
            k.cleanup()
        db.drop()


def _parallel(nodes, run) -> list[dict]:
    results: list = [None] * len(nodes)

    def one(n):
        results[n] = run(nodes[n], n)
    threads = [threading.Thread(target=one, args=(n,)) for n in range(len(nodes))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="100,200,400", help="total rates per second")
    parser.add_argument("--duration", type=float, default=8)
    parser.add_argument("--children", type=int, default=4, help="workers per Kamailio node")
    parser.add_argument("--only", default="B1,B2,B3")
    parser.add_argument("--watchers", type=int, default=200, help="B2's watchers")
    parser.add_argument("--setups", default="single,galera,native-single,native-galera")
    parser.add_argument("--json", help="write the steps to this file")
    args = parser.parse_args()
    procs.install_handlers()
    workdir = tempfile.mkdtemp(prefix="pa-bench-galera-")
    single = PrivateMariaDB().start()
    cluster = GaleraCluster()
    steps = []
    try:
        cluster.start()
        setups = []
        for name in args.setups.split(","):
            setup = Setup(name, cluster.nodes[:2] if name.endswith("galera") else [single],
                          args.children)
            setup.all_servers = cluster.nodes if name.endswith("galera") else [single]
            setups.append(setup)
        for bench in args.only.split(","):
            if bench == "B2":
                for setup in setups:
                    r = fan_out(setup, args.watchers)
                    steps.append(r)
                    print(f"B2 {setup.name:13} {args.watchers} watchers: p50 {r.get('p50_ms')} ms,"
                          f" p99 {r.get('p99_ms')} ms, {r.get('notifies_per_s')} NOTIFY/s,"
                          f" CPU {r.get('cpu_per_1000')} s/1000 NOTIFYs"
                          + (f"; {r['error']}" if r.get("error") else ""), flush=True)
                continue
            for rate in [float(r) for r in args.rates.split(",")]:
                for setup in setups:
                    r = step(setup, bench, rate, args.duration, workdir)
                    steps.append(r)
                    print(f"{bench} {setup.name:13} {rate:6g}/s: "
                          f"{'pass' if r['passed'] else 'FAIL'} ({r['reason']}), "
                          f"{r['successful']}/{r['calls']} ok, achieved {r['achieved_rate']}/s, "
                          f"CPU {r['cpu_per_1000']} s/1000 (Kamailio {r['cpu_kamailio_s']} s"
                          f" + mariadbd {r['cpu_mariadb_s']} s)", flush=True)
    finally:
        cluster.cleanup()
        single.cleanup()
        if args.json:
            with open(args.json, "w") as f:
                json.dump(steps, f, indent=1)
    return 0


if __name__ == "__main__":
    time.tzset()
    sys.exit(main())
