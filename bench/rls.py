"""List benchmark: N subscribers, each subscribed to its own list of M
members (RFC 4662, Supported: eventlist), the members changing state one
after another; ours (kamailio.cfg.sample, the plugin) side by side with
Kamailio's rls (bench/rls-native.cfg: rls + pua + presence).

Members are drawn from a pool of P presentities (list i holds members
i*M/2 ... modulo P, so lists overlap).  Each presentity publishes once
before the lists are subscribed; then each step modifies one presentity's
publication (note `bench-rls-K`) and measures the time until every
subscriber whose list holds it received a NOTIFY carrying that note.  One
UDP socket plays every subscriber and the publisher and answers each
NOTIFY 200 at once.  Reported: per-step latency (median, max), NOTIFYs and
bytes received per change, and the CPU seconds Kamailio and MariaDB spent
over the steps.

Run as root after bin/pa-install (it starts a private MariaDB, like
bench/run):
    /usr/bin/python3 bench/rls.py --subscribers 50 --members 10 --steps 10
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import select
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import kamailio  # noqa: E402
import mariadb  # noqa: E402
import ports  # noqa: E402
import procs  # noqa: E402
import sipmsg  # noqa: E402

HOST = "127.0.0.1"
RL = "urn:ietf:params:xml:ns:resource-lists"
RLS = "urn:ietf:params:xml:ns:rls-services"
ACCEPT = "Accept: application/pidf+xml, application/rlmi+xml, multipart/related"


def services_doc(list_uri: str, members: list[str]) -> bytes:
    entries = "".join(f'<rl:entry uri="{m}"/>' for m in members)
    return (f'<?xml version="1.0" encoding="UTF-8"?><rls-services xmlns="{RLS}" xmlns:rl="{RL}">'
            f'<service uri="{list_uri}"><list name="l">{entries}</list>'
            f"<packages><package>presence</package></packages></service></rls-services>").encode()


def provision(db: mariadb.MariaDB, target: str, lists: dict[str, tuple[str, list[str]]]) -> None:
    """Each subscriber's rls-services document with its list inline, where
    each target reads it: ours pa_xcap_document + pa_rls_service (what a PUT
    to the built-in XCAP server stores), native the xcap table (doc_type 8)."""
    with db.connect() as conn, conn.cursor() as cur:
        for owner, (list_uri, members) in lists.items():
            doc = services_doc(list_uri, members)
            if target == "ours":
                cur.execute("INSERT INTO pa_xcap_document (owner, auid, etag, body, fetched_at)"
                            " VALUES (%s, 'rls-services', %s, %s, %s)",
                            (owner, secrets.token_hex(6), doc, int(time.time())))
                cur.execute("INSERT INTO pa_rls_service (uri, owner) VALUES (%s, %s)",
                            (list_uri[4:], owner))
            else:
                user, domain = owner.split("@")
                cur.execute("INSERT INTO xcap (username, domain, doc, doc_type, etag, source,"
                            " doc_uri, port) VALUES (%s, %s, %s, 8, %s, 0, %s, 0)",
                            (user, domain, doc, secrets.token_hex(6),
                             f"/xcap-root/rls-services/users/sip:{owner}/index"))


class Lists:
    def __init__(self, port: int, lists: dict[str, tuple[str, list[str]]]):
        self.server = (HOST, port)
        self.lists = lists
        self.sock = sipmsg.udp_socket()
        self.local = self.sock.getsockname()
        self.nonce = secrets.token_hex(3)
        self.contact = f"Contact: <sip:bench@{self.local[0]}:{self.local[1]}>"
        self.replies: dict[tuple[str, str], sipmsg.Message] = {}
        self.notifies = 0
        self.notify_bytes = 0
        self.marker: bytes | None = None
        self.marked: dict[str, float] = {}
        self.first_notify: set[str] = set()
        self.etags: dict[str, str] = {}
        self.subscribed: set[str] = set()

    def pump(self, until: float, done=lambda: False) -> None:
        while not done():
            wait = until - time.monotonic()
            if wait <= 0:
                return
            if not select.select([self.sock], [], [], wait)[0]:
                return
            while True:
                try:
                    data = self.sock.recv(65535, 0x40)
                except BlockingIOError:
                    break
                msg = sipmsg.Message(data)
                if not msg.is_response:
                    if msg.method == "NOTIFY":
                        self.sock.sendto(sipmsg.response(msg), self.server)
                        self.notifies += 1
                        self.notify_bytes += len(data)
                        self.first_notify.add(msg.call_id)
                        if self.marker and self.marker in msg.body and \
                                msg.call_id not in self.marked:
                            self.marked[msg.call_id] = time.monotonic()
                    continue
                if msg.status >= 200:
                    self.replies[(msg.call_id, msg.header("cseq").split()[0])] = msg

    def publish(self, presentity: str, note: str, timeout: float = 5.0) -> int:
        call_id = f"rp-{self.nonce}-{presentity}"
        cseq = int(time.monotonic() * 1000) % 1_000_000_000
        msg = sipmsg.publish(presentity, self.local, call_id, cseq,
                             sipmsg.pidf(presentity, note), etag=self.etags.get(presentity))
        self.sock.sendto(msg, self.server)
        key = (call_id, str(cseq))
        self.pump(time.monotonic() + timeout, lambda: key in self.replies)
        reply = self.replies.pop(key, None)
        if reply is not None and reply.status == 200:
            self.etags[presentity] = reply.header("sip-etag")
        return reply.status if reply else 0

    def subscribe_all(self, timeout: float) -> dict[str, int]:
        """Each list subscribed in turn (its answer awaited, the request
        sent again after a second without one): a burst would only measure
        how many datagrams a socket buffer holds."""
        codes: dict[str, int] = {}
        for owner, (list_uri, _) in self.lists.items():
            call_id = f"rs-{self.nonce}-{owner}"
            msg = sipmsg.request("SUBSCRIBE", list_uri, self.local, call_id, f"sip:{owner}",
                                 secrets.token_hex(4), list_uri, 1,
                                 ["Event: presence", "Expires: 3600", "Supported: eventlist",
                                  ACCEPT, self.contact])
            for _ in range(3):
                self.sock.sendto(msg, self.server)
                self.pump(time.monotonic() + timeout / 3, lambda: (call_id, "1") in self.replies)
                if (call_id, "1") in self.replies:
                    codes[call_id] = self.replies[(call_id, "1")].status
                    break
        return codes

    def step(self, presentity: str, k: int, timeout: float) -> tuple[float | None, int]:
        """Modify one presentity; seconds until every list holding it was
        told (None: not within `timeout`), and how many were."""
        expected = {f"rs-{self.nonce}-{o}" for o, (_, m) in self.lists.items()
                    if f"sip:{presentity}" in m} & self.subscribed
        self.marker = f"bench-rls-{self.nonce}-{k}<".encode()
        self.marked = {}
        started = time.monotonic()
        self.publish(f"sip:{presentity}", f"bench-rls-{self.nonce}-{k}")
        self.pump(started + timeout, lambda: expected <= set(self.marked))
        told = len(expected & set(self.marked))
        if told < len(expected):
            return None, told
        return max(self.marked[c] for c in expected) - started, told


def run(target: str, args) -> dict:
    db = mariadb.MariaDB(ports.free_port(*ports.MARIADB_PORTS))
    k = None
    try:
        db.start()
        port = ports.free_port(*ports.KAMAILIO_PORTS)
        if target == "native":
            with open(os.path.join(kamailio.BENCH, "rls-native.cfg")) as f:
                cfg = f.read().replace("RLS_SELF", f"sip:{HOST}:{port}")
            cfg = cfg.replace('modparam("rls", "to_presence_code", 10)',
                              'modparam("rls", "to_presence_code", 10)\n'
                              f'modparam("rls", "waitn_time", {args.waitn_time})')
            path = os.path.join(tempfile.mkdtemp(prefix="pa-bench-rls-"), "rls-native.cfg")
            with open(path, "w") as f:
                f.write(cfg)
            kamailio.CONFIGS["rls-native"] = path
            name = "rls-native"
        else:
            name = "ours"
            kamailio.OURS_SETTINGS = dict(kamailio.OURS_SETTINGS,
                                          rls_notify_interval=args.notify_interval)
        db.reset("native" if target == "native" else "ours", kamailio.CONFIGS[name])
        pool = [f"p{j}@{HOST}" for j in range(args.pool)]
        lists = {}
        for i in range(args.subscribers):
            start = (i * args.members // 2) % args.pool
            members = [f"sip:{pool[(start + j) % args.pool]}" for j in range(args.members)]
            lists[f"w{i}@{HOST}"] = (f"sip:l{i}@{HOST}", members)
        provision(db, target, lists)
        k = kamailio.Kamailio(name, port, db.url(), args.children, 256)
        k.start()
        client = Lists(port, lists)
        for p in pool:
            client.publish(f"sip:{p}", "initial")
        codes = client.subscribe_all(timeout=3)
        client.subscribed = {c for c, code in codes.items() if code == 200}
        accepted = len(client.subscribed)
        # Let first NOTIFYs and (native) back-end subscriptions settle.
        client.pump(time.monotonic() + args.settle)
        db.settle()
        before = (procs.cpu_seconds(k.pids()), procs.cpu_seconds([db.pid]))
        notifies0, bytes0 = client.notifies, client.notify_bytes
        latencies, missed, told = [], 0, 0
        for n in range(args.steps):
            presentity = pool[(n * 7) % args.pool]
            if n and args.gap:
                client.pump(time.monotonic() + args.gap)
            latency, count = client.step(presentity, n, args.timeout)
            told += count
            if latency is None:
                missed += 1
            else:
                latencies.append(latency)
        after = (procs.cpu_seconds(k.pids()), procs.cpu_seconds([db.pid]))
        return {
            "target": target, "rate_limit_s": args.waitn_time if target == "native"
            else args.notify_interval, "gap_s": args.gap, "subscribers": args.subscribers, "members": args.members,
            "pool": args.pool, "subscribed": accepted, "first_notified": len(client.first_notify),
            "steps": args.steps, "steps_missed": missed,
            "latency_median_ms": round(statistics.median(latencies) * 1000, 1) if latencies else None,
            "latency_max_ms": round(max(latencies) * 1000, 1) if latencies else None,
            "lists_told": told,
            "notifies_per_change": round((client.notifies - notifies0) / max(args.steps, 1), 1),
            "kbytes_per_change": round((client.notify_bytes - bytes0) / 1024 / max(args.steps, 1), 1),
            "cpu_kamailio_s": round(after[0] - before[0], 2),
            "cpu_mariadb_s": round(after[1] - before[1], 2),
        }
    finally:
        if k is not None:
            k.cleanup(keep_log_to=f"/tmp/pa-bench-rls-{target}.log")
        db.cleanup()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--subscribers", type=int, default=50)
    p.add_argument("--members", type=int, default=10)
    p.add_argument("--pool", type=int, default=40)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--timeout", type=float, default=10.0, help="per step (s)")
    p.add_argument("--settle", type=float, default=8.0, help="after subscribing (s)")
    p.add_argument("--children", type=int, default=4)
    p.add_argument("--notify-interval", type=int, default=1,
                   help="ours' rls_notify_interval (s; 1 is its default)")
    p.add_argument("--gap", type=float, default=0.0, help="pause between steps (s)")
    p.add_argument("--waitn-time", type=int, default=5,
                   help="native rls's waitn_time (s; 5 is its default)")
    p.add_argument("--targets", default="ours,native")
    args = p.parse_args()
    procs.install_handlers()
    results = []
    try:
        for target in args.targets.split(","):
            results.append(run(target, args))
            print(json.dumps(results[-1]), flush=True)
    finally:
        procs.kill_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
