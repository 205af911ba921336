"""What the operator's tools read and change (pa-admin), the statistics,
the SIP and XCAP users (Kamailio's subscriber table), and the schema."""

from __future__ import annotations

from typing import NamedTuple

from .db import Database, has_table


class Counts(NamedTuple):
    """Live state across the cluster: subscriptions by (event, status),
    publications by origin, presentities with publications."""
    subscriptions: dict[tuple[str, str], int]
    publications: dict[str, int]
    presentities: int
    by_event: dict[str, int] = {}     # publications by event package


class Admin:
    def __init__(self, db: Database):
        self.db = db

    # -- schema --------------------------------------------------------------------

    def schema_version(self) -> int | None:
        def work(s):
            if not has_table(s, "pa_schema"):
                return None
            s.execute("SELECT MAX(version) FROM pa_schema")
            return s.fetchone()[0]
        return self.db.run(work)

    def has_table(self, name: str) -> bool:
        return self.db.run(lambda s: has_table(s, name))

    def apply_sql(self, text: str) -> None:
        """Run a schema file (statements separated by ';' at line ends)."""
        statements = [s.strip() for s in text.split(";\n") if s.strip()
                      and not all(line.startswith("--") or not line.strip()
                                  for line in s.strip().splitlines())]

        def work(s):
            for statement in statements:
                s.execute(statement.rstrip(";"))
        self.db.run(work)

    # -- counts --------------------------------------------------------------------

    def counts(self, now: int) -> Counts:
        """One round trip: what the statistics' gauges and `pa-admin counts`
        show."""
        def work(s):
            subs, pubs, presentities = s.batch(
                ("SELECT event, status, COUNT(*) FROM pa_subscription WHERE expires_at > %s"
                 " GROUP BY event, status", (now,)),
                ("SELECT event, origin, COUNT(*) FROM pa_publication WHERE expires_at > %s"
                 " GROUP BY event, origin", (now,)),
                ("SELECT COUNT(DISTINCT presentity, presence_domain, event) FROM pa_publication"
                 " WHERE expires_at > %s", (now,)))
            by_origin: dict[str, int] = {}
            by_event: dict[str, int] = {}
            for event, origin, n in pubs.rows:
                by_origin[origin] = by_origin.get(origin, 0) + int(n)
                by_event[event] = by_event.get(event, 0) + int(n)
            return Counts({(e, st): int(n) for e, st, n in subs.rows}, by_origin,
                          int(presentities.rows[0][0]), by_event)
        return self.db.run(work)

    def backlog(self, now: int) -> dict:
        """Documents kept, tasks waiting, and expired state not yet swept."""
        def work(s):
            docs, tasks, subs, pubs = s.batch(
                ("SELECT COUNT(*) FROM pa_document WHERE body <> ''", ()),
                ("SELECT COUNT(*) FROM pa_task", ()),
                ("SELECT COUNT(*) FROM pa_subscription WHERE expires_at <= %s", (now,)),
                ("SELECT COUNT(*) FROM pa_publication WHERE expires_at <= %s", (now,)))
            return {"documents": int(docs.rows[0][0]), "tasks waiting": int(tasks.rows[0][0]),
                    "expired subscriptions": int(subs.rows[0][0]),
                    "expired publications": int(pubs.rows[0][0])}
        return self.db.run(work)

    # -- presentities --------------------------------------------------------------

    def presentities(self, domain: str, event: str, like: str, now: int) -> list[dict]:
        def work(s):
            s.execute(
                "SELECT p.presentity, p.presence_domain, p.publications,"
                " (SELECT COUNT(*) FROM pa_subscription s WHERE s.presentity = p.presentity"
                "  AND s.presence_domain = p.presence_domain AND s.event = %s"
                "  AND s.expires_at > %s),"
                " (SELECT d.version FROM pa_document d WHERE d.presentity = p.presentity"
                "  AND d.presence_domain = p.presence_domain AND d.event = %s)"
                " FROM (SELECT presentity, presence_domain, COUNT(*) AS publications"
                "  FROM pa_publication WHERE presence_domain = %s AND presentity LIKE %s"
                "  AND expires_at > %s GROUP BY presentity, presence_domain"
                "  UNION SELECT presentity, presence_domain, 0 FROM pa_subscription"
                "  WHERE presence_domain = %s AND presentity LIKE %s AND expires_at > %s"
                "  AND presentity NOT IN (SELECT presentity FROM pa_publication"
                "   WHERE presence_domain = %s AND expires_at > %s)"
                "  GROUP BY presentity, presence_domain) p ORDER BY p.presentity",
                (event, now, event, domain, f"%{like}%", now, domain, f"%{like}%", now,
                 domain, now))
            return [dict(presentity=r[0], domain=r[1], publications=r[2], watchers=r[3],
                         version=r[4] or 0) for r in s.fetchall()]
        return self.db.run(work)

    def publications(self, presentity: str, domain: str, now: int) -> list[dict]:
        def work(s):
            s.execute("SELECT event, etag, origin, source, publisher, expires_at, updated_at"
                      " FROM pa_publication WHERE presentity = %s AND presence_domain = %s"
                      " AND expires_at > %s ORDER BY event, id", (presentity, domain, now))
            names = ("event", "etag", "origin", "source", "publisher", "expires_at",
                     "updated_at")
            return [dict(zip(names, r)) for r in s.fetchall()]
        return self.db.run(work)

    def subscriptions(self, presentity: str, domain: str) -> list[dict]:
        def work(s):
            s.execute("SELECT watcher, event, status, expires_at, last_notify_code,"
                      " local_cseq, call_id FROM pa_subscription WHERE presentity = %s"
                      " AND presence_domain = %s ORDER BY event, watcher", (presentity, domain))
            names = ("watcher", "event", "status", "expires_at", "last_notify_code",
                     "local_cseq", "call_id")
            return [dict(zip(names, r)) for r in s.fetchall()]
        return self.db.run(work)

    def decisions(self, presentity: str, domain: str) -> list[dict]:
        def work(s):
            s.execute("SELECT watcher, event, status, reason, updated_at FROM pa_watcher"
                      " WHERE presentity = %s AND presence_domain = %s ORDER BY watcher, event",
                      (presentity, domain))
            return [dict(watcher=r[0], event=r[1], status=r[2], reason=r[3], updated=r[4])
                    for r in s.fetchall()]
        return self.db.run(work)

    def subscription_exists(self, call_id: str) -> bool:
        def work(s):
            s.execute("SELECT 1 FROM pa_subscription WHERE call_id = %s LIMIT 1", (call_id,))
            return s.fetchone() is not None
        return self.db.run(work)

    # -- SIP and XCAP users: Kamailio's subscriber table (auth_db) ------------------

    def set_user(self, user: str, domain: str, ha1: str, ha1b: str) -> bool:
        """Create the user or give it new credentials; True when created.
        The password itself is not stored (auth_db reads ha1)."""
        return self.db.run(lambda s: s.execute(
            "INSERT INTO subscriber (username, domain, password, ha1, ha1b)"
            " VALUES (%s, %s, '', %s, %s) ON DUPLICATE KEY UPDATE"
            " password = '', ha1 = VALUES(ha1), ha1b = VALUES(ha1b)",
            (user, domain, ha1, ha1b)) == 1)

    def remove_user(self, user: str, domain: str) -> bool:
        return self.db.run(lambda s: s.execute(
            "DELETE FROM subscriber WHERE username = %s AND domain = %s", (user, domain)) > 0)

    def users(self, like: str) -> list[dict]:
        def work(s):
            s.execute("SELECT username, domain FROM subscriber"
                      " WHERE CONCAT(username, '@', domain) LIKE %s"
                      " ORDER BY domain, username", (f"%{like}%",))
            return [dict(user=f"{u}@{d}") for u, d in s.fetchall()]
        return self.db.run(work)

    # -- resource lists -----------------------------------------------------------------------

    def list_subscriptions(self, limit: int) -> list[tuple]:
        """Each list subscription with its members' last told states:
        (list_uri, owner, watcher, event, expires_at, [(uri, source,
        sent_state, sent_reason)])."""
        def work(s):
            s.execute("SELECT r.subscription_id, r.list_uri, r.owner, s.watcher, s.event,"
                      " s.expires_at FROM pa_rls_subscription r JOIN pa_subscription s"
                      " ON s.id = r.subscription_id ORDER BY r.list_uri, s.watcher LIMIT %s",
                      (limit,))
            heads = s.fetchall()
            out = []
            for head in heads:
                s.execute("SELECT uri, source, sent_state, sent_reason FROM pa_rls_member"
                          " WHERE subscription_id = %s ORDER BY position", (head[0],))
                out.append((*head[1:], s.fetchall()))
            return out
        return self.db.run(work)

    def list_services(self) -> list[tuple[str, str]]:
        """Every list URI with its owner."""
        def work(s):
            s.execute("SELECT uri, owner FROM pa_rls_service ORDER BY uri")
            return list(s.fetchall())
        return self.db.run(work)
