"""What authorization reads and keeps: the presentities' decisions about
their watchers (pa_watcher), the XCAP documents of the built-in server and
the cached copies of an external one, the digest nonces the XCAP server
has seen, the secrets every node shares, and the users' digest secrets
(Kamailio's subscriber table)."""

from __future__ import annotations

from typing import Callable

from ..records import Decision, TaskKind, XcapDocument
from .common import INSERT_TASK
from .db import Database

SAVE_XCAP = ("INSERT INTO pa_xcap_document (owner, auid, etag, body, fetched_at)"
              " VALUES (%s, %s, %s, %s, %s) ON DUPLICATE KEY UPDATE etag = VALUES(etag),"
              " body = VALUES(body), fetched_at = VALUES(fetched_at)")


class Decisions:
    def __init__(self, db: Database):
        self.db = db

    # -- the presentities' decisions --------------------------------------------

    def of(self, domain: str, event: str, presentity: str, watcher: str) -> Decision | None:
        def work(s):
            s.execute("SELECT status, reason FROM pa_watcher WHERE presentity = %s"
                      " AND watcher = %s AND presence_domain = %s AND event = %s",
                      (presentity, watcher, domain, event))
            row = s.fetchone()
            return Decision(*row) if row else None
        return self.db.run(work)

    def decide(self, presentity: str, watcher: str, domain: str, event: str, status: str,
               reason: str, now: int) -> None:
        """Store a decision, and the task that tells the watchers: one
        transaction."""
        self.db.transaction(lambda s: s.batch(
            ("INSERT INTO pa_watcher (presentity, watcher, presence_domain, event, status,"
             " reason, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s)"
             " ON DUPLICATE KEY UPDATE status = VALUES(status), reason = VALUES(reason),"
             " updated_at = VALUES(updated_at)",
             (presentity, watcher, domain, event, status, reason, now)),
            (INSERT_TASK, (TaskKind.REAUTHORIZE.value, presentity, domain, "", now))))

    def forget(self, presentity: str, watcher: str, domain: str, now: int) -> None:
        """Forget the decisions about a watcher, and leave the task that ends
        its subscriptions: one transaction."""
        self.db.transaction(lambda s: s.batch(
            ("DELETE FROM pa_watcher WHERE presentity = %s AND watcher = %s"
             " AND presence_domain = %s", (presentity, watcher, domain)),
            (INSERT_TASK, (TaskKind.REMOVE.value, presentity, domain, watcher, now))))

    # -- XCAP documents ---------------------------------------------------------------

    def xcap_document(self, owner: str, auid: str) -> XcapDocument | None:
        """A stored or cached XCAP document."""
        def work(s):
            s.execute("SELECT etag, body, fetched_at FROM pa_xcap_document"
                      " WHERE owner = %s AND auid = %s", (owner, auid))
            row = s.fetchone()
            return XcapDocument(*row) if row else None
        return self.db.run(work)

    def save_xcap_document(self, owner: str, auid: str, etag: str, body: bytes,
                           now: int) -> None:
        self.db.run(lambda s: s.execute(SAVE_XCAP, (owner, auid, etag, body, now)))

    def touch_xcap_document(self, owner: str, auid: str, now: int) -> None:
        self.db.run(lambda s: s.execute(
            "UPDATE pa_xcap_document SET fetched_at = %s WHERE owner = %s AND auid = %s",
            (now, owner, auid)))

    def write_xcap_document(self, owner: str, auid: str, body: bytes | None, etag: str,
                            allowed: Callable[[str | None], bool], now: int) -> str:
        """Store (body) or delete (None) a document of the built-in XCAP
        server if `allowed(current etag or None)`, atomically.  Returns
        'created', 'replaced', 'deleted', 'missing' or 'precondition'."""
        def work(s):
            s.execute("SELECT etag FROM pa_xcap_document WHERE owner = %s AND auid = %s"
                      " FOR UPDATE", (owner, auid))
            row = s.fetchone()
            current = row[0] if row else None
            if not allowed(current) or (body is None and current is None):
                s.rollback()
                return "precondition" if not allowed(current) else "missing"
            if body is None:
                s.batch(("DELETE FROM pa_xcap_document WHERE owner = %s AND auid = %s",
                         (owner, auid)), commit=True)
                return "deleted"
            s.batch((SAVE_XCAP, (owner, auid, etag, body, now)), commit=True)
            return "created" if current is None else "replaced"
        return self.db.transaction(work)

    def stale_rule_owners(self, auid: str, event: str, before: int, limit: int) -> list[str]:
        """Presentities watched for `event` whose copy of the rules is older
        than `before`, oldest first (through the copies' age index, not a
        scan of the subscriptions)."""
        def work(s):
            s.execute("SELECT x.owner FROM pa_xcap_document x WHERE x.fetched_at < %s"
                      " AND x.auid = %s AND EXISTS (SELECT 1 FROM pa_subscription s"
                      " WHERE s.presentity = x.owner AND s.event = %s)"
                      " ORDER BY x.fetched_at LIMIT %s", (before, auid, event, limit))
            return [row[0] for row in s.fetchall()]
        return self.db.run(work)

    # -- digest ------------------------------------------------------------------------

    def first_nonce_use(self, nonce: str, nc: int, expires_at: int, now: int) -> bool:
        """Record that (nonce, nc) proved a request; False when it already
        had (a replay).  Expired records go at the same time, so the table
        holds only live nonces (a replay of an expired one is stale anyway)."""
        def work(s):
            _, inserted = s.batch(
                ("DELETE FROM pa_xcap_nonce WHERE expires_at < %s", (now,)),
                ("INSERT IGNORE INTO pa_xcap_nonce (nonce, nc, expires_at) VALUES (%s, %s, %s)",
                 (nonce, nc, expires_at)))
            return inserted.rowcount == 1
        return self.db.run(work)

    def shared_secret(self, name: str, new: str) -> str:
        """The secret `name` every node shares: `new` if this is the first
        process to ask, else the one stored before."""
        def work(s):
            _, row = s.batch(("INSERT IGNORE INTO pa_secret (name, value) VALUES (%s, %s)",
                              (name, new)),
                             ("SELECT value FROM pa_secret WHERE name = %s", (name,)))
            return row.rows[0][0]
        return self.db.run(work)

    def ha1(self, user: str, realm: str) -> str | None:
        """The digest secret of a user from Kamailio's subscriber table."""
        def work(s):
            s.execute("SELECT ha1 FROM subscriber WHERE username = %s AND domain = %s",
                      (user, realm))
            row = s.fetchone()
            return row[0] if row else None
        return self.db.run(work)
