"""What Galera's causal reads (the db_sync_wait setting) cost, on this
machine: two Kamailio nodes on two nodes of a three-node Galera cluster
(tests/galera.py), one device refreshing its publication through them in
turn, each refresh right after the answer to the one before (the case
that reads a stale entity-tag without causal reads), and the same with
several devices at once.

    /usr/bin/python3 bench/galera_sync_wait.py [--refreshes N] [--devices N]

Prints, per db_sync_wait value, the PUBLISH round trip (median, 95th
percentile), the 412s (stale entity-tags), and the retries."""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
sys.path.insert(0, os.path.dirname(HERE))

from galera import GaleraCluster  # noqa: E402
from harness import Kamailio, ScratchDatabase  # noqa: E402
from helpers import pidf_body  # noqa: E402
from sipua import SipUA  # noqa: E402


def run(cluster, sync_wait: int, refreshes: int, devices: int) -> dict:
    db = ScratchDatabase(server=cluster.nodes[0])
    nodes = []
    try:
        for i in range(2):
            port = cluster.nodes[i].port
            url = f"mysql://{db.user}:{db.password}@127.0.0.1:{port}/{db.name}"
            nodes.append(Kamailio(dict(db_url=url, auth="none", db_sync_wait=sync_wait,
                                       timer_interval=1), children=4,
                                  usrloc_db_url=url).start())
        latencies, codes = [], []
        lock = threading.Lock()

        def device(n):
            uas = [SipUA(k.address, user=f"dev{n}") for k in nodes]
            presentity = f"sip:bench{n}@127.0.0.1"
            etag = None
            try:
                for i in range(refreshes):
                    headers = [("Event", "presence"), ("Content-Type", "application/pidf+xml")]
                    if etag:
                        headers.append(("SIP-If-Match", etag))
                    started = time.perf_counter()
                    r = uas[i % 2].request("PUBLISH", presentity, headers,
                                           pidf_body(presentity, "t", "open", note=str(i)))
                    elapsed = time.perf_counter() - started
                    with lock:
                        latencies.append(elapsed)
                        codes.append(r.status)
                    etag = r.get("sip-etag") if r.status == 200 else None
            finally:
                for ua in uas:
                    ua.close()
        threads = [threading.Thread(target=device, args=(n,)) for n in range(devices)]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - started
        retries = 0
        for k in nodes:
            out = k.rpc("stats.get_statistics", "pa_db_retries")
            retries += int(out.rsplit("=", 1)[1].strip())
        latencies.sort()
        return dict(sync_wait=sync_wait, devices=devices, publishes=len(codes),
                    median_ms=1000 * statistics.median(latencies),
                    p95_ms=1000 * latencies[int(0.95 * (len(latencies) - 1))],
                    per_second=len(codes) / wall,
                    stale_412=codes.count(412), other=len([c for c in codes if c not in (200, 412)]),
                    retries=retries)
    finally:
        for k in nodes:
            k.cleanup()
        db.drop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--refreshes", type=int, default=300)
    parser.add_argument("--devices", type=int, default=4)
    parser.add_argument("--values", default="0,3,7", help="db_sync_wait values to compare")
    args = parser.parse_args()
    cluster = GaleraCluster()
    try:
        cluster.start()
        for devices in (1, args.devices):
            for sync_wait in [int(v) for v in args.values.split(",")]:
                result = run(cluster, sync_wait, args.refreshes, devices)
                print("db_sync_wait={sync_wait} devices={devices}: {publishes} PUBLISHes, "
                      "median {median_ms:.2f} ms, p95 {p95_ms:.2f} ms, {per_second:.0f}/s, "
                      "412 (stale) {stale_412}, other {other}, retries {retries}".format(**result),
                      flush=True)
    finally:
        cluster.cleanup()


if __name__ == "__main__":
    main()
