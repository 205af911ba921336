"""The XMPP gateway's state (pa_xmpp_link, pa_xmpp_resource): which SIP
users watch which XMPP users and the other way round, and the presence of
the XMPP users' resources.  The gateway is their only writer, one process."""

from __future__ import annotations

from ..records import XmppResource, XmppWatcherUpdate
from .db import Database


class Xmpp:
    def __init__(self, db: Database):
        self.db = db

    def watch_pairs(self, domain: str, event: str, now: int) -> set[tuple[str, str]]:
        """(SIP watcher, XMPP user) of the live subscriptions to `event` of
        presentities of `domain`."""
        def work(s):
            s.execute("SELECT DISTINCT watcher, presentity FROM pa_subscription"
                      " WHERE presence_domain = %s AND event = %s AND expires_at > %s",
                      (domain, event, now))
            return {tuple(row) for row in s.fetchall()}
        return self.db.run(work)

    def links(self, direction: str, jid: str | None = None,
              state: str | None = None) -> dict[tuple[str, str], str]:
        """{(SIP user, JID): state} of the gateway's links one way."""
        def work(s):
            s.execute("SELECT sip_user, jid, state FROM pa_xmpp_link WHERE direction = %s"
                      " AND (%s IS NULL OR jid = %s) AND (%s IS NULL OR state = %s)",
                      (direction, jid, jid, state, state))
            return {(sip_user, j): st for sip_user, j, st in s.fetchall()}
        return self.db.run(work)

    def link_state(self, direction: str, sip_user: str, jid: str) -> str | None:
        def work(s):
            s.execute("SELECT state FROM pa_xmpp_link WHERE direction = %s AND sip_user = %s"
                      " AND jid = %s", (direction, sip_user, jid))
            row = s.fetchone()
            return row[0] if row else None
        return self.db.run(work)

    def save_link(self, direction: str, sip_user: str, jid: str, state: str, now: int) -> None:
        self.db.run(lambda s: s.execute(
            "INSERT INTO pa_xmpp_link (direction, sip_user, jid, state, updated_at)"
            " VALUES (%s, %s, %s, %s, %s) ON DUPLICATE KEY UPDATE"
            " state = VALUES(state), updated_at = VALUES(updated_at)",
            (direction, sip_user, jid, state, now)))

    def delete_link(self, direction: str, sip_user: str, jid: str) -> None:
        self.db.run(lambda s: s.execute(
            "DELETE FROM pa_xmpp_link WHERE direction = %s AND sip_user = %s AND jid = %s",
            (direction, sip_user, jid)))

    def mark_link_version(self, direction: str, sip_user: str, jid: str, version: int) -> None:
        self.db.run(lambda s: s.execute(
            "UPDATE pa_xmpp_link SET version = %s WHERE direction = %s AND sip_user = %s"
            " AND jid = %s", (version, direction, sip_user, jid)))

    def watchers_to_update(self, domain: str, event: str) -> list[XmppWatcherUpdate]:
        """The XMPP watchers of SIP users that wait for authorization, or
        whose SIP user's document changed since they were told."""
        def work(s):
            s.execute("SELECT l.sip_user, l.jid, l.state, l.version, COALESCE(d.version, 0),"
                      " d.body FROM pa_xmpp_link l LEFT JOIN pa_document d"
                      " ON d.presentity = l.sip_user AND d.presence_domain = %s AND d.event = %s"
                      " WHERE l.direction = 'in' AND (l.state = 'pending'"
                      " OR COALESCE(d.version, 0) <> l.version)", (domain, event))
            return [XmppWatcherUpdate(*row) for row in s.fetchall()]
        return self.db.run(work)

    def save_resource(self, jid: str, resource: str, available: bool, shown: str, status: str,
                      priority: int, now: int, limit: int) -> list[XmppResource] | None:
        """Record the presence of one resource of an XMPP user (an
        unavailable one is forgotten) and return all its available
        resources; None, recording nothing, for a new resource beyond
        `limit` of them.  Resources are kept as the UTF-8 bytes XMPP
        compares (RFC 7622)."""
        name = resource.encode("utf-8", "surrogatepass")

        def work(s):
            if available:
                s.execute("SELECT COUNT(*), COALESCE(SUM(resource = %s), 0) FROM"
                          " pa_xmpp_resource WHERE jid = %s", (name, jid))
                count, known = s.fetchone()
                if not known and count >= limit:
                    return None
                first = ("INSERT INTO pa_xmpp_resource (jid, resource, available, shown, status,"
                         " priority, updated_at) VALUES (%s, %s, 1, %s, %s, %s, %s)"
                         " ON DUPLICATE KEY UPDATE shown = VALUES(shown), status = VALUES(status),"
                         " priority = VALUES(priority), updated_at = VALUES(updated_at)",
                         (jid, name, shown, status[:1000], priority, now))
            else:
                first = ("DELETE FROM pa_xmpp_resource WHERE jid = %s AND resource = %s",
                         (jid, name))
            _, rows = s.batch(first, ("SELECT resource, shown, status, priority FROM"
                                      " pa_xmpp_resource WHERE jid = %s ORDER BY resource",
                                      (jid,)))
            return [XmppResource(bytes(r).decode("utf-8", "surrogatepass"), sh, st, pr)
                    for r, sh, st, pr in rows.rows]
        return self.db.run(work)

    def forget_resources(self, jid: str) -> None:
        self.db.run(lambda s: s.execute("DELETE FROM pa_xmpp_resource WHERE jid = %s", (jid,)))
