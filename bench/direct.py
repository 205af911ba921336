"""The handlers driven directly, without Kamailio or SIP sockets: what one
B1 dialog, one B2 NOTIFY and one B3 PUBLISH+refresh cost in our Python
and in mariadbd, and how many statements each sends.

    /usr/bin/python3 bench/direct.py [--ops N] [--watchers W] [--repeat R]

A private MariaDB (bench/mariadb.py) serves one PresenceAgent in this
process, as one Kamailio worker would use it.  The figures are CPU times
from the kernel (this process, mariadbd) divided by the operations, and
the server's `Questions` counter: unlike bench/run, they hardly move when
other work shares the machine, so a change to the handlers can be judged
by them before the full side-by-side run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import mariadb  # noqa: E402  (bench/mariadb.py)
import ports  # noqa: E402
import procs  # noqa: E402

from pa_handlers.agent import PresenceAgent  # noqa: E402
from pa_handlers.config import settings_from_mapping  # noqa: E402
from pa_handlers.messages import Context  # noqa: E402
from pa_handlers.store import Store  # noqa: E402
from pa_handlers.store.db import Database  # noqa: E402

HOST = "127.0.0.1"
PIDF = ('<?xml version="1.0" encoding="UTF-8"?>\n'
        '<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:{user}@127.0.0.1">'
        '<tuple id="t1"><status><basic>open</basic></status>'
        '<note>{note}</note></tuple></presence>')


def _request(method: str, ruri_user: str, call_id: str, from_user: str, from_tag: str,
             headers: list[str], body: str = "") -> bytes:
    lines = [f"{method} sip:{ruri_user}@{HOST} SIP/2.0",
             f"Via: SIP/2.0/UDP {HOST}:5070;branch=z9hG4bK{call_id}",
             f"From: <sip:{from_user}@{HOST}>;tag={from_tag}",
             f"To: <sip:{ruri_user}@{HOST}>",
             f"Call-ID: {call_id}",
             f"CSeq: 1 {method}",
             f"Contact: <sip:{from_user}@{HOST}:5070>",
             "Max-Forwards: 70", *headers,
             f"Content-Length: {len(body.encode())}", "", body]
    return "\r\n".join(lines).encode()


def subscribe(presentity: str, n: int, tag: str = "d") -> bytes:
    return _request("SUBSCRIBE", presentity, f"sub-{tag}-{n}", f"watcher{n}", f"w{n}",
                    ["Event: presence", "Accept: application/pidf+xml", "Expires: 600"])


def publish(presentity: str, n: int, note: str, etag: str | None = None,
            body: bool = True) -> bytes:
    headers = ["Event: presence", "Expires: 3600"]
    if etag:
        headers.append(f"SIP-If-Match: {etag}")
    if body:
        headers.append("Content-Type: application/pidf+xml")
    return _request("PUBLISH", presentity, f"pub-{presentity}-{n}", presentity, f"p{n}",
                    headers, PIDF.format(user=presentity, note=note) if body else "")


class Meter:
    """CPU of this process and of mariadbd, and the server's statements,
    over a block of operations."""

    def __init__(self, db: mariadb.MariaDB):
        self.db = db

    def questions(self) -> int:
        with self.db.admin() as conn, conn.cursor() as cur:
            cur.execute("SHOW GLOBAL STATUS LIKE 'Questions'")
            return int(cur.fetchone()[1])

    def __enter__(self):
        self.q0 = self.questions()
        self.py0 = os.times()
        self.db0 = procs.cpu_seconds([self.db.pid])
        return self

    def __exit__(self, *exc):
        t = os.times()
        self.python = t.user - self.py0.user + t.system - self.py0.system
        self.python_sys = t.system - self.py0.system
        self.mariadbd = procs.cpu_seconds([self.db.pid]) - self.db0
        # The two SHOW STATUS of the meter itself count as questions too.
        self.statements = self.questions() - self.q0 - 1
        return False

    def per(self, ops: int) -> dict:
        return {"python_us": 1e6 * self.python / ops,
                "python_sys_us": 1e6 * self.python_sys / ops, "mariadbd_us": 1e6 * self.mariadbd / ops,
                "statements": self.statements / ops}


def agent_for(db: mariadb.MariaDB) -> PresenceAgent:
    settings = settings_from_mapping({
        "db_url": db.url(), "auth": "none", "min_expires": 60,
        "max_subscriptions_per_presentity": 100000})
    return PresenceAgent(settings, Store(Database.for_settings(settings)))


def ctx(n: int) -> Context:
    return Context(local_tag=f"lt{n}", socket=f"udp:{HOST}:5060",
                   local_contact=f"sip:{HOST}:5060", source=f"udp:{HOST}:5070")


def _answer(pa: PresenceAgent, notifies) -> None:
    pending = list(notifies)
    while pending:
        answers = [(n.dialog, n.cseq) for n in pending]
        pending = pa.handle_notify_answers(answers)


def b1(pa: PresenceAgent, db: mariadb.MariaDB, ops: int, run: int) -> dict:
    """New dialogs to 500 published presentities, each first NOTIFY
    answered in batches of 50 (the answers' timer at 1 000 dialogs/s)."""
    for i in range(500):
        pa.handle_publish(publish(f"pres{i}", i, "seed"), ctx(i), "registrar")
    db.settle()
    with Meter(db) as m:
        sent = []
        for n in range(ops):
            out = pa.handle_subscription(subscribe(f"pres{n % 500}", n, f"r{run}"), ctx(n),
                                         "registrar")
            assert out.reply.code == 200, out.reply
            sent += out.notifies
            if len(sent) >= 50:
                _answer(pa, sent)
                sent = []
        _answer(pa, sent)
    return m.per(ops)


def b2(pa: PresenceAgent, db: mariadb.MariaDB, watchers: int, steps: int, run: int) -> dict:
    """One presentity with `watchers` watchers; each PUBLISH modification
    fans out, every NOTIFY answered in batches of 100."""
    who = f"fan{run}"
    etag = None
    out = pa.handle_publish(publish(who, 0, "step-0"), ctx(0), "registrar")
    etag = dict(out.reply.headers)["SIP-ETag"]
    sent = []
    for n in range(watchers):
        sent += pa.handle_subscription(subscribe(who, n, f"f{run}"), ctx(n),
                                       "registrar").notifies
    _answer(pa, sent)
    db.settle()
    with Meter(db) as m:
        for step in range(1, steps + 1):
            out = pa.handle_publish(publish(who, step, f"step-{step}", etag), ctx(step),
                                    "registrar")
            assert out.reply.code == 200, out.reply
            etag = dict(out.reply.headers)["SIP-ETag"]
            assert len(out.notifies) == watchers, len(out.notifies)
            for start in range(0, watchers, 100):
                _answer(pa, out.notifies[start:start + 100])
    return m.per(watchers * steps)


def b3(pa: PresenceAgent, db: mariadb.MariaDB, ops: int, run: int) -> dict:
    """A PUBLISH to a new presentity, nobody watching, then its refresh."""
    with Meter(db) as m:
        for n in range(ops):
            who = f"b3-{run}-{n}"
            out = pa.handle_publish(publish(who, n, "b3"), ctx(n), "registrar")
            assert out.reply.code == 200, out.reply
            etag = dict(out.reply.headers)["SIP-ETag"]
            out = pa.handle_publish(publish(who, n, "", etag, body=False), ctx(n), "registrar")
            assert out.reply.code == 200, out.reply
    return m.per(ops)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ops", type=int, default=3000)
    ap.add_argument("--watchers", type=int, default=200)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", default="B1,B2,B3")
    args = ap.parse_args()
    only = set(args.only.split(","))
    db = mariadb.MariaDB(ports.free_port(34000, 34999))
    try:
        db.start()
        db.reset("ours", os.path.join(ROOT, "kamailio.cfg.sample"))
        pa = agent_for(db)
        results: dict[str, list[dict]] = {}
        for run in range(args.repeat):
            if "B1" in only:
                results.setdefault("B1 per dialog", []).append(b1(pa, db, args.ops, run))
            if "B2" in only:
                results.setdefault(f"B2 per NOTIFY (W={args.watchers})", []).append(
                    b2(pa, db, args.watchers, args.steps, run))
            if "B3" in only:
                results.setdefault("B3 per PUBLISH+refresh", []).append(
                    b3(pa, db, args.ops, run))
        for name, runs in results.items():
            cells = []
            for key in ("python_us", "python_sys_us", "mariadbd_us", "statements"):
                values = [r[key] for r in runs]
                cells.append(f"{key} {statistics.median(values):.1f} "
                             f"[{min(values):.1f}-{max(values):.1f}]")
            print(f"{name}: " + ", ".join(cells))
    finally:
        db.cleanup()


if __name__ == "__main__":
    main()
