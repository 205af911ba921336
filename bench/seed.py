"""State a measurement starts from: presentities with published state (by
PUBLISH over SIP, identical for both targets), and for the flatness check
subscriptions stored directly in pa_subscription."""

from __future__ import annotations

import select
import time

import sipmsg

DOMAIN = "127.0.0.1"


def publish_all(port: int, users: list[str], note: str = "seeded", window: int = 20,
                timeout: float = 60.0) -> int:
    """PUBLISH an open PIDF document (Expires 3600) for each user, at most
    `window` transactions in flight; retransmit after 1 s.  Returns the
    number answered 200."""
    sock = sipmsg.udp_socket()
    local = sock.getsockname()
    pending: dict[str, tuple[bytes, float, int]] = {}  # call-id -> (msg, sent, tries)
    todo = list(users)
    ok = 0
    deadline = time.monotonic() + timeout
    try:
        while (todo or pending) and time.monotonic() < deadline:
            while todo and len(pending) < window:
                user = todo.pop()
                uri = f"sip:{user}@{DOMAIN}"
                call_id = f"seed-{user}-{time.monotonic_ns()}"
                msg = sipmsg.publish(uri, local, call_id, 1, sipmsg.pidf(uri, note))
                sock.sendto(msg, ("127.0.0.1", port))
                pending[call_id] = (msg, time.monotonic(), 1)
            ready, _, _ = select.select([sock], [], [], 0.2)
            if ready:
                reply = sipmsg.Message(sock.recv(65535))
                if reply.is_response and reply.status >= 200 and reply.call_id in pending:
                    del pending[reply.call_id]
                    ok += reply.status == 200
            now = time.monotonic()
            for call_id, (msg, sent, tries) in list(pending.items()):
                if now - sent > 1.0:
                    if tries >= 5:
                        del pending[call_id]
                    else:
                        sock.sendto(msg, ("127.0.0.1", port))
                        pending[call_id] = (msg, now, tries + 1)
    finally:
        sock.close()
    return ok


FAR_FUTURE = 4_000_000_000  # year 2096: never swept during a run


def _subscription_row(i: int, port: int, presentities: int, now: int) -> dict:
    """Stored subscription number i, valued like what a real SUBSCRIBE
    leaves in pa_subscription."""
    presentity = f"other{i % presentities}@{DOMAIN}"
    watcher = f"stored{i}@{DOMAIN}"
    return {
        "presence_domain": "registrar", "event": "presence", "event_id": "",
        "presentity": presentity, "watcher": watcher, "watcher_display": "",
        "call_id": f"stored-{i}", "local_tag": f"lt{i}", "remote_tag": f"rt{i}",
        "local_uri": f"<sip:{presentity}>", "remote_uri": f"<sip:{watcher}>",
        "remote_target": f"sip:stored{i}@127.0.0.1:9", "route_set": "",
        "local_contact": f"sip:127.0.0.1:{port};transport=udp", "socket": f"udp:127.0.0.1:{port}",
        "received": "udp:127.0.0.1:9", "remote_cseq": 1, "local_cseq": 1,
        "content_type": "application/pidf+xml", "status": "active", "reason": "",
        "expires_at": FAR_FUTURE, "unanswered_since": None, "last_notify_code": 200,
        "created_at": now,
    }


def store_subscriptions(conn, count: int, port: int, presentities: int = 5000,
                        batch: int = 2000) -> None:
    """`count` active subscriptions to presentities other than the
    benchmark's (other0..), expiring far in the future and with their last
    NOTIFY answered, so that no timer touches them during the run.

    The schema evolves with the plugin: only the columns the table has are
    filled, and a new mandatory column we do not know stops with its name."""
    now = int(time.time())
    with conn.cursor() as cur:
        cur.execute("SELECT column_name, is_nullable, column_default, extra"
                    " FROM information_schema.columns"
                    " WHERE table_schema = DATABASE() AND table_name = 'pa_subscription'")
        table = {name.lower(): (nullable, default, extra) for name, nullable, default, extra in cur.fetchall()}
        known = _subscription_row(0, port, presentities, now)
        missing = [name for name, (nullable, default, extra) in table.items()
                   if name not in known and nullable == "NO" and default is None
                   and "auto_increment" not in extra]
        if missing:
            raise RuntimeError(f"pa_subscription has mandatory columns the benchmark does not fill: {missing}")
        columns = [c for c in known if c in table]
        sql = (f"INSERT INTO pa_subscription ({', '.join(columns)}) VALUES ("
               + ", ".join(["%s"] * len(columns)) + ")")
        for start in range(0, count, batch):
            rows = [_subscription_row(i, port, presentities, now)
                    for i in range(start, min(count, start + batch))]
            cur.executemany(sql, [tuple(r[c] for c in columns) for r in rows])
