"""The flood of the hardening issue, reproduced: N subscriptions to one
presentity whose Contact never answers, then P PUBLISHes, against
kamailio.cfg.sample with S MB of shared memory; reports the peak of
Kamailio's shared memory, its transactions, the allocation failures it
logged and the answers the attacker got.

    /usr/bin/python3 bench/flood.py                   # 3000 subscriptions, 4 PUBLISHes, 128 MB
    /usr/bin/python3 bench/flood.py --rate-limit 100  # with the sample's per-source limit
    /usr/bin/python3 bench/flood.py --set max_subscriptions_per_presentity=100000

Uses the MariaDB the tests use (a scratch database of its own) and a
Kamailio on a free port; prints one JSON object.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import re
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "tests"))

from harness import Kamailio, ScratchDatabase  # noqa: E402

PRESENTITY = "sip:victim@127.0.0.1"
NO_SHM = re.compile(r"no more shm|could not allocate shared memory|not enough shm", re.I)


def shm(kamailio: Kamailio) -> dict[str, int]:
    """kamcmd core.shmmem: total, free, used, real_used, max_used, fragments."""
    return {k: int(v) for k, v in re.findall(r"(\w+): (\d+)", kamailio.rpc("core.shmmem"))}


def transactions(kamailio: Kamailio) -> int:
    return int(re.search(r"current: (\d+)", kamailio.rpc("tm.stats")).group(1))


class Attacker:
    """One UDP socket sending everything, a thread counting the answers."""

    def __init__(self, server: tuple[str, int]):
        self.server = server
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.port = self.sock.getsockname()[1]
        self.answers: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self.etag = ""
        self.unanswered: dict[str, bytes] = {}   # Call-ID -> request, until a final answer
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                data = self.sock.recv(65535)
            except OSError:
                return
            first, _, rest = data.partition(b"\r\n")
            if not first.startswith(b"SIP/2.0 "):
                continue
            code = int(first.split()[1])
            method = re.search(rb"(?im)^CSeq:\s*\d+\s+(\w+)", rest)
            call_id = re.search(rb"(?im)^Call-ID:\s*(\S+)", rest)
            if code >= 200 and method and call_id and \
                    self.unanswered.pop(call_id.group(1).decode(), None) is not None:
                self.answers[method.group(1).decode()][code] += 1
            etag = re.search(rb"(?im)^SIP-ETag:\s*(\S+)", rest)
            if etag:
                self.etag = etag.group(1).decode()

    def send(self, method: str, headers: list[str], body: bytes = b"", user: str = "attacker"):
        call_id = "%x@flood" % random.getrandbits(64)
        head = [f"{method} {PRESENTITY} SIP/2.0",
                f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{random.getrandbits(48):x}",
                "Max-Forwards: 70", f"From: <sip:{user}@127.0.0.1>;tag={random.getrandbits(32):x}",
                f"To: <{PRESENTITY}>", f"Call-ID: {call_id}", f"CSeq: 1 {method}"]
        head += headers + [f"Content-Length: {len(body)}", "", ""]
        self.unanswered[call_id] = "\r\n".join(head).encode() + body
        self.sock.sendto(self.unanswered[call_id], self.server)

    def retransmit(self, until: float) -> None:
        """Send again what got no answer yet, as a UA over UDP does."""
        while self.unanswered and time.monotonic() < until:
            time.sleep(0.5)
            for request in list(self.unanswered.values()):
                self.sock.sendto(request, self.server)


def publish(attacker: Attacker, size: int, step) -> None:
    """A PUBLISH (modifying the last one), waiting for its answer."""
    headers = ["Event: presence", "Expires: 3600", "Content-Type: application/pidf+xml"]
    if attacker.etag:
        headers.append(f"SIP-If-Match: {attacker.etag}")
    before = sum(attacker.answers["PUBLISH"].values())
    attacker.send("PUBLISH", headers, note_document(size, step), user="victim")
    deadline = time.monotonic() + 5
    while sum(attacker.answers["PUBLISH"].values()) == before and time.monotonic() < deadline:
        time.sleep(0.01)


def note_document(size: int, step) -> bytes:
    note = f"step {step} " + "x" * max(0, size - 300)
    return (f'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="{PRESENTITY}">'
            f'<tuple id="t"><status><basic>open</basic></status></tuple>'
            f"<note>{note}</note></presence>").encode()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--subscriptions", type=int, default=3000)
    ap.add_argument("--publishes", type=int, default=4)
    ap.add_argument("--publish-first", action="store_true",
                    help="publish the document before the subscriptions (their first NOTIFY"
                         " carries it)")
    ap.add_argument("--body-kb", type=float, default=8.0, help="size of each published document")
    ap.add_argument("--rate", type=float, default=1700.0,
                    help="SUBSCRIBEs per second (the issue's flood: 3000 in 1.8 s)")
    ap.add_argument("--shm", type=int, default=128, help="Kamailio's shared memory (MB)")
    ap.add_argument("--children", type=int, default=4)
    ap.add_argument("--rate-limit", type=int, default=1000000,
                    help="PA_RATE_LIMIT of the sample (requests/s per source); default: none")
    ap.add_argument("--watch", type=float, default=40.0, help="seconds to watch after the flood")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a setting of the plugin (YAML value)")
    args = ap.parse_args()

    import yaml
    db = ScratchDatabase()
    settings = dict(db_url=db.url(), auth="none")
    for item in args.set:
        key, _, value = item.partition("=")
        settings[key] = yaml.safe_load(value)
    kamailio = Kamailio(settings, children=args.children, shm_mb=args.shm,
                        env={"PA_RATE_LIMIT": str(args.rate_limit)})
    blackhole = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)   # never read
    blackhole.bind(("127.0.0.1", 0))
    dead = f"sip:dead@127.0.0.1:{blackhole.getsockname()[1]}"
    try:
        kamailio.start()
        attacker = Attacker(kamailio.address)
        size = int(args.body_kb * 1024)
        if args.publish_first:
            publish(attacker, size, "first")
            time.sleep(6)   # its transaction gone (tm's wait timer)
        base = shm(kamailio)
        peak = dict(real_used=base["real_used"], transactions=0)
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                try:
                    peak["real_used"] = max(peak["real_used"], shm(kamailio)["real_used"])
                    peak["transactions"] = max(peak["transactions"], transactions(kamailio))
                except Exception:
                    pass
                time.sleep(0.1)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.monotonic()
        for i in range(args.subscriptions):
            while time.monotonic() < started + i / args.rate:
                time.sleep(0.0005)
            attacker.send("SUBSCRIBE", [f"Contact: <{dead}>", "Event: presence", "Expires: 3600"],
                          user=f"attacker{i}")
        attacker.retransmit(started + 10)
        flood_s = time.monotonic() - started
        time.sleep(1.0)
        for step in range(args.publishes):
            publish(attacker, size, step)
        time.sleep(args.watch)
        stop.set()
        sampler.join(2)
        final = shm(kamailio)
        log = kamailio.log()
        print(json.dumps({
            "subscriptions_sent": args.subscriptions, "flood_seconds": round(flood_s, 2),
            "publishes": args.publishes, "body_bytes": size, "shm_mb": args.shm,
            "rate_limit": args.rate_limit, "settings": {k: v for k, v in settings.items()
                                                        if k != "db_url"},
            "shm_before_mb": round(base["real_used"] / 2**20, 1),
            "shm_peak_mb": round(peak["real_used"] / 2**20, 1),
            "shm_max_used_mb": round(final["max_used"] / 2**20, 1),
            "shm_at_end_mb": round(final["real_used"] / 2**20, 1),
            "transactions_at_end": transactions(kamailio),
            "peak_transactions": peak["transactions"],
            "shm_allocation_failures_logged": len(NO_SHM.findall(log)),
            "answers": {m: dict(c) for m, c in attacker.answers.items()},
            "stored_subscriptions": db.query("SELECT COUNT(*) FROM pa_subscription")[0][0],
        }, indent=1))
    finally:
        kamailio.cleanup()
        db.drop()
        blackhole.close()


if __name__ == "__main__":
    main()
