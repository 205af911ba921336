"""State a measurement starts from: presentities with published state (by
PUBLISH over SIP, identical for both targets), and for the flatness check
subscriptions stored directly in pa_subscription."""

from __future__ import annotations

import re
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
CHUNK = 100_000
# The user part of the presentity whose publication is cloned (seeded by
# publish_all as pres0): every occurrence of "<TEMPLATE_USER>@" in the
# cloned row is replaced by the new presentity's user.
TEMPLATE_USER = "pres0"


def chunks(count: int, size: int = CHUNK) -> list[tuple[int, int]]:
    """[first, last] ranges of seq covering 0..count-1 once, in order."""
    return [(start, min(count, start + size) - 1) for start in range(0, count, size)]


def literal(value) -> str:
    """An SQL literal of a constant the benchmark chose (numbers, plain
    ASCII text): no quoting games needed, so none allowed."""
    if value is None:
        return "NULL"
    if isinstance(value, (int, float)):
        return str(value)
    text = str(value)
    if not re.fullmatch(r"[A-Za-z0-9 _.:;@<>=+/-]*", text):
        raise ValueError(f"not a plain literal: {text!r}")
    return f"'{text}'"


def concat(*parts) -> str:
    """CONCAT of literals (str) and SQL expressions (given as ('sql', e))."""
    return "CONCAT(" + ", ".join(p[1] if isinstance(p, tuple) else literal(p) for p in parts) + ")"


def subscription_exprs(port: int, presentities: int, now: int, user: str = "other",
                       watcher: str = "stored") -> dict[str, str]:
    """Column -> SQL expression of `seq` for stored subscription number seq:
    presentity `<user><seq mod presentities>@DOMAIN`, valued like what a
    real SUBSCRIBE leaves in pa_subscription, active, expiring far in the
    future, its last NOTIFY answered, so that no timer touches it."""
    seq = ("sql", "seq")
    p = ("sql", f"seq % {int(presentities)}")
    return {
        "presence_domain": literal("registrar"), "event": literal("presence"),
        "event_id": literal(""),
        "presentity": concat(user, p, f"@{DOMAIN}"),
        "watcher": concat(watcher, seq, f"@{DOMAIN}"),
        "watcher_display": literal(""),
        "call_id": concat(f"{watcher}-", seq), "local_tag": concat("lt", seq),
        "remote_tag": concat("rt", seq),
        "local_uri": concat(f"<sip:{user}", p, f"@{DOMAIN}>"),
        "remote_uri": concat(f"<sip:{watcher}", seq, f"@{DOMAIN}>"),
        "remote_target": concat(f"sip:{watcher}", seq, "@127.0.0.1:9"),
        "route_set": literal(""),
        "local_contact": literal(f"sip:127.0.0.1:{port};transport=udp"),
        "socket": literal(f"udp:127.0.0.1:{port}"),
        "received": literal("udp:127.0.0.1:9"), "remote_cseq": literal(1), "local_cseq": literal(1),
        "content_type": literal("application/pidf+xml"), "status": literal("active"),
        "reason": literal(""), "expires_at": literal(FAR_FUTURE),
        "unanswered_since": literal(None), "last_notify_code": literal(200),
        "created_at": literal(now),
    }


def insert_select(table: str, exprs: dict[str, str], first: int, last: int,
                  source: str = "", where: str = "") -> str:
    """INSERT of rows seq = first..last whose columns are `exprs`, selected
    from MariaDB's sequence table (and `source`, e.g. a template row)."""
    sources = f"seq_{int(first)}_to_{int(last)}" + (f", {source}" if source else "")
    return (f"INSERT INTO {table} ({', '.join(exprs)}) SELECT {', '.join(exprs.values())}"
            f" FROM {sources}" + (f" WHERE {where}" if where else ""))


def _columns(cur, table: str) -> dict[str, tuple]:
    cur.execute("SELECT column_name, is_nullable, column_default, extra, data_type"
                " FROM information_schema.columns"
                " WHERE table_schema = DATABASE() AND table_name = %s", (table,))
    return {name.lower(): rest for name, *rest in cur.fetchall()}


def _bulk(cur, table: str, exprs: dict[str, str], count: int, source: str = "",
          where: str = "") -> None:
    # Rows are unique by construction: skip the checks InnoDB can defer.
    cur.execute("SET SESSION unique_checks = 0, foreign_key_checks = 0")
    for first, last in chunks(count):
        cur.execute(insert_select(table, exprs, first, last, source, where))
    cur.execute("SET SESSION unique_checks = 1, foreign_key_checks = 1")


def store_subscriptions(conn, count: int, port: int, presentities: int = 5000,
                        user: str = "other") -> None:
    """`count` active subscriptions to presentities `<user>0..` (not the
    benchmark's), expiring far in the future, with their last NOTIFY
    answered, so that no timer touches them during the run.

    The schema evolves with the plugin: only the columns the table has are
    filled, and a new mandatory column we do not know stops with its name."""
    now = int(time.time())
    with conn.cursor() as cur:
        table = _columns(cur, "pa_subscription")
        known = subscription_exprs(port, presentities, now, user=user)
        missing = [name for name, (nullable, default, extra, _) in table.items()
                   if name not in known and nullable == "NO" and default is None
                   and "auto_increment" not in extra]
        if missing:
            raise RuntimeError(f"pa_subscription has mandatory columns the benchmark does not fill: {missing}")
        _bulk(cur, "pa_subscription", {c: e for c, e in known.items() if c in table}, count)


def clone_exprs(columns: dict[str, tuple], user: str, overrides: dict[str, str]) -> dict[str, str]:
    """Column -> expression copying the template row (passed as the
    parameters %(column)s) with every "TEMPLATE_USER@" of its text replaced
    by "<user><seq>@"; `overrides` take precedence; auto-increment columns
    are left to the table.  (Parameters, not a join with the template's
    table: MariaDB would copy that table to a temporary one first.)"""
    exprs = {}
    for name, (_, _, extra, data_type) in columns.items():
        if "auto_increment" in extra:
            continue
        if name in overrides:
            exprs[name] = overrides[name]
        elif data_type in ("varchar", "char", "text", "mediumtext", "blob", "mediumblob", "longblob"):
            exprs[name] = (f"REPLACE(%({name})s, {literal(TEMPLATE_USER + '@')}, "
                           f"{concat(user, ('sql', 'seq'), '@')})")
        else:
            exprs[name] = f"%({name})s"
    return exprs


def _template(cur, table: str, where: str, value) -> dict:
    cur.execute(f"SELECT * FROM {table} WHERE {where} LIMIT 1", (value,))
    row = cur.fetchone()
    if not row:
        raise RuntimeError(f"no row of {TEMPLATE_USER} in {table} to clone")
    return {d[0].lower(): v for d, v in zip(cur.description, row)}


def _bulk_clone(cur, table: str, exprs: dict[str, str], template: dict, count: int) -> None:
    cur.execute("SET SESSION unique_checks = 0, foreign_key_checks = 0")
    for first, last in chunks(count):
        cur.execute(insert_select(table, exprs, first, last), template)
    cur.execute("SET SESSION unique_checks = 1, foreign_key_checks = 1")


def store_publications(conn, count: int, user: str = "flatpub") -> None:
    """`count` publications and their presentities' documents, presentities
    `<user>0..`, cloned from those of TEMPLATE_USER (which publish_all must
    have published), expiring far in the future."""
    with conn.cursor() as cur:
        template = _template(cur, "pa_publication", "presentity LIKE %s", f"%{TEMPLATE_USER}@%")
        publication = clone_exprs(_columns(cur, "pa_publication"), user, {
            "etag": concat(("sql", "LEFT(%(etag)s, 40)"), "-", ("sql", "seq")),
            "expires_at": literal(FAR_FUTURE)})
        _bulk_clone(cur, "pa_publication", publication, template, count)
        template = _template(cur, "pa_document", "presentity LIKE %s", f"%{TEMPLATE_USER}@%")
        _bulk_clone(cur, "pa_document", clone_exprs(_columns(cur, "pa_document"), user, {}),
                    template, count)


def store_watched(conn, presentities: int, watchers_each: int, port: int,
                  user: str = "flatpub") -> None:
    """`presentities` presentities with a publication, a document and
    `watchers_each` active subscriptions each."""
    store_publications(conn, presentities, user=user)
    store_subscriptions(conn, presentities * watchers_each, port, presentities=presentities,
                        user=user)


def database_bytes(conn) -> int:
    """Data + index length of the benchmark database's tables (InnoDB's
    statistics, refreshed first)."""
    with conn.cursor() as cur:
        cur.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE()")
        tables = [r[0] for r in cur.fetchall()]
        for t in tables:
            cur.execute(f"ANALYZE TABLE `{t}`")
            cur.fetchall()
        cur.execute("SELECT COALESCE(SUM(data_length + index_length), 0) FROM information_schema.tables"
                    " WHERE table_schema = DATABASE()")
        return int(cur.fetchone()[0])
