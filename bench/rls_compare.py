"""The same list requests to ours and to Kamailio's rls (bench/rls-native.cfg),
and what each answers: a list URI without Supported: eventlist, with it, a
refresh, an unsubscription; the RLMI versions and fullState of the NOTIFYs
that follow.  Prints one JSON object per target.

    /usr/bin/python3 bench/rls_compare.py     (as root, like bench/run)
"""
import json
import os
import re
import select
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kamailio  # noqa: E402
import mariadb  # noqa: E402
import ports  # noqa: E402
import procs  # noqa: E402
import rls as R  # noqa: E402
import sipmsg  # noqa: E402

def versions(msg):
    return [(int(v), f.decode()) for v, f in
            re.findall(rb'version="(\d+)" fullState="(\w+)"', msg.body)]


def run(target):
    db = mariadb.MariaDB(ports.free_port(*ports.MARIADB_PORTS)); k = None
    out = {}
    try:
        db.start()
        port = ports.free_port(*ports.KAMAILIO_PORTS)
        if target == "native":
            cfg = open(os.path.join(kamailio.BENCH, "rls-native.cfg")).read().replace("RLS_SELF", f"sip:127.0.0.1:{port}")
            path = os.path.join(tempfile.mkdtemp(), "rls-native.cfg"); open(path, "w").write(cfg)
            kamailio.CONFIGS["rls-native"] = path; name = "rls-native"
        else:
            name = "ours"
        db.reset("native" if target == "native" else "ours", kamailio.CONFIGS[name])
        lists = {"w0@127.0.0.1": ("sip:l0@127.0.0.1", ["sip:p0@127.0.0.1", "sip:p1@127.0.0.1"])}
        R.provision(db, target, lists)
        k = kamailio.Kamailio(name, port, db.url(), 2, 128); k.start()
        c = R.Lists(port, lists)
        c.publish("sip:p0@127.0.0.1", "initial")
        def sub(headers, call_id, cseq=1, to_tag="", expires=600):
            msg = sipmsg.request("SUBSCRIBE", "sip:l0@127.0.0.1", c.local, call_id, "sip:w0@127.0.0.1", "ft" + call_id[-4:], "sip:l0@127.0.0.1", cseq,
                                 ["Event: presence", f"Expires: {expires}", c.contact] + headers, to_tag=to_tag)
            c.sock.sendto(msg, c.server)
            end = time.monotonic() + 3
            while (call_id, str(cseq)) not in c.replies and time.monotonic() < end:
                collect(0.05)
            return c.replies.get((call_id, str(cseq)))
        notifies = {}

        def collect(sec):
            end = time.monotonic() + sec
            while time.monotonic() < end:
                if not select.select([c.sock], [], [], 0.1)[0]: continue
                data = c.sock.recv(65535)
                m = sipmsg.Message(data)
                if not m.is_response:
                    c.sock.sendto(sipmsg.response(m), c.server)
                    notifies.setdefault(m.call_id, []).append(m)
                else:
                    c.replies[(m.call_id, m.header("cseq").split()[0])] = m
        r = sub([R.ACCEPT], "cmp-noeventlist")
        out["no eventlist"] = (r.status, r.header("require")) if r else None
        collect(1)
        r = sub(["Supported: eventlist", R.ACCEPT], "cmp-list")
        out["eventlist"] = (r.status, r.header("require")) if r else None
        collect(7)
        ns = notifies.get("cmp-list", [])
        out["first NOTIFYs"] = [(m.header("require"), versions(m)) for m in ns]
        n0 = len(ns)
        totag = r.tag("to")
        r2 = sub(["Supported: eventlist", R.ACCEPT], "cmp-list", cseq=2, to_tag=totag)
        out["refresh"] = r2.status if r2 else None
        collect(7)
        ns = notifies.get("cmp-list", [])
        out["NOTIFYs after refresh"] = [versions(m) for m in ns[n0:]]
        n1 = len(ns)
        r3 = sub(["Supported: eventlist", R.ACCEPT], "cmp-list", cseq=3, to_tag=totag, expires=0)
        out["unsubscribe"] = r3.status if r3 else None
        collect(5)
        ns = notifies.get("cmp-list", [])
        out["NOTIFYs within 5 s of unsubscribe"] = [m.header("subscription-state") for m in ns[n1:]]
    finally:
        if k: k.cleanup()
        db.cleanup()
    return out

if __name__ == "__main__":
    procs.install_handlers()
    try:
        for t in ("ours", "native"):
            print(json.dumps(dict(target=t, **run(t)), default=str), flush=True)
    finally:
        procs.kill_all()
