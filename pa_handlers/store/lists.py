"""The resource list server's state (sql/006): the list URIs of the users'
rls-services documents, list subscriptions (a pa_subscription row for the
dialog plus a pa_rls_subscription row), and their members with what each
subscriber was last told of each.

A member is served from local state (source 'local': the presentity's
document in pa_document) or from an external source that keeps its state
in the member's row (source 'backend', fed by store.backend).
"""

from __future__ import annotations

from typing import Callable

from ..records import (NO_BACKEND, BackEndPolicy, DocumentKey, ListSubscription, MemberRow,
                       Subscription)
from .common import (IN_CHUNK, INSERT_COLS, SUB_COLS_S, documents_by_key,
                     select_documents, subscription)
from .backend import backend_statements as _backend_statements
from .db import Database, placeholders
from .decisions import SAVE_XCAP
from .subscriptions import INSERT_LIMITED

LOCAL = "local"
BACKEND = "backend"

# Not marked changed: the NOTIFY about to be built reads every member.
_INSERT_MEMBER = ("INSERT INTO pa_rls_member (subscription_id, position, uri, presentity, name,"
                  " source, sent_digest, dirty) VALUES (%s, %s, %s, %s, %s, %s, %s, 0)")


_MEMBER_COLS = ("uri, presentity, name, source, state, reason, content_type, body,"
                " sent_state, sent_reason, sent_digest")


class Lists:
    def __init__(self, db: Database):
        self.db = db

    # -- rls-services: which owner a list URI belongs to -------------------------------

    def service_owner(self, key: str) -> str | None:
        def work(s):
            s.execute("SELECT owner FROM pa_rls_service WHERE uri = %s", (key,))
            row = s.fetchone()
            return row[0] if row else None
        return self.db.run(work)

    def write_services(self, owner: str, auid: str, body: bytes | None, etag: str,
                       keys: list[str], allowed: Callable[[str | None], bool],
                       now: int) -> str:
        """Store (body) or delete (None) a user's rls-services document and
        the service URIs it claims, atomically, if `allowed(current etag)`.
        Returns 'created', 'replaced', 'deleted', 'missing', 'precondition'
        or 'conflict <uri>' (a URI another user's services claim)."""
        def work(s):
            s.execute("SELECT etag FROM pa_xcap_document WHERE owner = %s AND auid = %s"
                      " FOR UPDATE", (owner, auid))
            row = s.fetchone()
            current = row[0] if row else None
            if not allowed(current):
                s.rollback()
                return "precondition"
            if body is None and current is None:
                s.rollback()
                return "missing"
            if keys:
                s.execute("SELECT uri FROM pa_rls_service WHERE owner <> %s AND uri IN ("
                          + placeholders(len(keys)) + ") LIMIT 1 FOR UPDATE", [owner, *keys])
                taken = s.fetchone()
                if taken:
                    s.rollback()
                    return f"conflict {taken[0]}"
            statements = [("DELETE FROM pa_rls_service WHERE owner = %s", (owner,))]
            if keys:
                statements.append(("INSERT INTO pa_rls_service (uri, owner) VALUES "
                                   + placeholders(len(keys), "(%s, %s)"),
                                   [v for key in keys for v in (key, owner)]))
            if body is None:
                statements.append(("DELETE FROM pa_xcap_document WHERE owner = %s"
                                   " AND auid = %s", (owner, auid)))
            else:
                statements.append((SAVE_XCAP, (owner, auid, etag, body, now)))
            s.batch(*statements)
            s.commit()
            if body is None:
                return "deleted"
            return "created" if current is None else "replaced"
        return self.db.transaction(work)

    def all_documents(self, auid: str, limit: int) -> list[bytes]:
        """Every user's document of `auid` (for the global index)."""
        def work(s):
            s.execute("SELECT body FROM pa_xcap_document WHERE auid = %s ORDER BY owner"
                      " LIMIT %s", (auid, limit))
            return [row[0] for row in s.fetchall()]
        return self.db.run(work)

    # -- list subscriptions -----------------------------------------------------------------

    def add(self, sub: Subscription, list_uri: str, owner: str, member_type: str,
            members: list, now: int, deadline: int, limits: tuple[int, int],
            interval: int, backend: BackEndPolicy = NO_BACKEND) -> bool:
        """Store a new list subscription (first NOTIFY in flight until `deadline`),
        its members and back-end subscriptions; False beyond the limits."""
        def work(s):
            s.execute(INSERT_LIMITED, [getattr(sub, c) for c in INSERT_COLS]
                      + [now, deadline, *sub.key, sub.watcher, limits[0], *sub.key, limits[1]])
            if s.rowcount != 1:
                s.rollback()
                return False
            sub.id = s.lastrowid
            s.execute("INSERT INTO pa_rls_subscription (subscription_id, list_uri, owner,"
                      " member_type, next_notify_at) VALUES (%s, %s, %s, %s, %s)",
                      (sub.id, list_uri, owner, member_type, now + interval))
            s.executemany(_INSERT_MEMBER, [(sub.id, i, m.uri, m.presentity, m.name, BACKEND
                                            if backend.remote(m.presentity) else LOCAL, "")
                                           for i, m in enumerate(members)])
            remote = [m.uri for m in members if backend.remote(m.presentity)]
            if remote:
                s.batch(*_backend_statements(sub.id, sub.event, sub.watcher, remote,
                                             backend.limit))
            return True
        return self.db.transaction(work)

    def of(self, subscription_id: int, full: bool = False
           ) -> tuple[ListSubscription | None, list[MemberRow], dict[str, bytes]]:
        """A list subscription, in list order its members (all of them when
        its next NOTIFY carries full state, `full` or full_due; else those
        that changed since a NOTIFY last looked at them, no longer marked
        changed: a change from now on marks them again), and the documents
        of those that are local, by presentity."""
        def work(s):
            s.execute("SELECT subscription_id, list_uri, owner, member_type, full_due"
                      " FROM pa_rls_subscription WHERE subscription_id = %s FOR UPDATE",
                      (subscription_id,))
            row = s.fetchone()
            if row is None:
                s.rollback()
                return None, [], {}
            head = ListSubscription(*row)
            which = "" if full or head.full_due else " AND m.dirty = 1"
            members, docs, _ = s.batch(
                ("SELECT " + ", ".join("m." + c for c in _MEMBER_COLS.split(", "))
                 + " FROM pa_rls_member m WHERE m.subscription_id = %s" + which
                 + " ORDER BY m.position", (subscription_id,)),
                ("SELECT m.presentity, d.body FROM pa_rls_member m JOIN pa_subscription s"
                 " ON s.id = m.subscription_id JOIN pa_document d ON d.presentity = m.presentity"
                 " AND d.presence_domain = s.presence_domain AND d.event = s.event"
                 " WHERE m.subscription_id = %s AND m.source = 'local'" + which,
                 (subscription_id,)),
                ("UPDATE pa_rls_member SET dirty = 0 WHERE subscription_id = %s AND dirty = 1",
                 (subscription_id,)))
            s.commit()
            return head, [MemberRow(*r) for r in members.rows], dict(docs.rows)
        return self.db.transaction(work)

    def told(self, subscription_id: int, told: list[tuple[str, str, str, str]],
             full: bool, next_notify_at: int, deferred: list[str] = ()) -> None:
        """Record what a NOTIFY told of members ((uri, state, reason,
        digest) each; a full-state one is no longer due), and that the
        `deferred` ones did not fit: they go in the next NOTIFY, at once."""
        def work(s):
            statements = [("UPDATE pa_rls_subscription SET full_due = IF(%s, 0, full_due),"
                           " next_notify_at = %s, pending = pending OR %s"
                           " WHERE subscription_id = %s",
                           (full, 0 if deferred else next_notify_at, bool(deferred),
                            subscription_id))]
            if deferred:
                statements.append(("UPDATE pa_rls_member SET dirty = 1 WHERE subscription_id = %s"
                                   " AND uri IN (" + placeholders(len(deferred)) + ")",
                                   [subscription_id, *deferred]))
            statements += [("UPDATE pa_rls_member SET sent_state = %s, sent_reason = %s,"
                            " sent_digest = %s WHERE subscription_id = %s AND uri = %s",
                            (state, reason, digest, subscription_id, uri))
                           for uri, state, reason, digest in told]
            s.batch(*statements)
        self.db.run(work) if len(told) + len(deferred) < 2 else self.db.transaction(work)

    def documents(self, keys: list[DocumentKey]) -> dict[DocumentKey, bytes]:
        """The documents of members (one round trip per IN_CHUNK keys)."""
        def work(s):
            found: dict[DocumentKey, bytes] = {}
            for i in range(0, len(keys), IN_CHUNK):
                s.execute(*select_documents(keys[i:i + IN_CHUNK]))
                found.update(documents_by_key(s.fetchall()))
            return found
        return self.db.run(work) if keys else {}

    def want_full(self, subscription_id: int) -> None:
        """The next NOTIFY carries full state (a SUBSCRIBE refreshed it)."""
        self.db.run(lambda s: s.execute(
            "UPDATE pa_rls_subscription SET full_due = 1 WHERE subscription_id = %s",
            (subscription_id,)))

    def with_member(self, presentity: str, domain: str | None, event: str | None) -> list[int]:
        """Mark changed `presentity` as a local member of list
        subscriptions (of `domain` and `event` when given), and those
        subscriptions pending; returns their ids."""
        def work(s):
            where = (" WHERE m.presentity = %s AND m.source = 'local'"
                     " AND (%s IS NULL OR s.presence_domain = %s)"
                     " AND (%s IS NULL OR s.event = %s)")
            args = (presentity, domain, domain, event, event)
            update, select = s.batch(
                ("UPDATE pa_rls_member m JOIN pa_subscription s ON s.id = m.subscription_id"
                 " JOIN pa_rls_subscription r ON r.subscription_id = m.subscription_id"
                 " SET m.dirty = 1, r.pending = 1" + where, args),
                ("SELECT DISTINCT m.subscription_id FROM pa_rls_member m"
                 " JOIN pa_subscription s ON s.id = m.subscription_id" + where, args))
            return [row[0] for row in select.rows]
        return self.db.run(work)

    def of_owner(self, owner: str) -> list[tuple[Subscription, str]]:
        """The live stored-list subscriptions of an owner's services, with
        their list URIs."""
        def work(s):
            s.execute("SELECT " + SUB_COLS_S + ", r.list_uri FROM pa_rls_subscription r"
                      " JOIN pa_subscription s ON s.id = r.subscription_id WHERE r.owner = %s",
                      (owner,))
            return [(subscription(row), row[-1]) for row in s.fetchall()]
        return self.db.run(work)

    def replace_members(self, subscription_id: int, members: list,
                        backend: BackEndPolicy = NO_BACKEND) -> bool:
        """Make a list subscription's members `members`, keeping what was told of
        those that stay (next NOTIFY: full state); back-end subscriptions of
        members gone are due (ended if unneeded).  Whether they changed."""
        def work(s):
            s.execute("SELECT uri, position, presentity, name FROM pa_rls_member"
                      " WHERE subscription_id = %s FOR UPDATE", (subscription_id,))
            current = {row[0]: row[1:] for row in s.fetchall()}
            wanted = {m.uri: (i, m.presentity, m.name) for i, m in enumerate(members)}
            if current == wanted:
                s.rollback()
                return False
            gone = [uri for uri in current if uri not in wanted]
            s.execute("SELECT event, watcher FROM pa_subscription WHERE id = %s", (subscription_id,))
            event, watcher = s.fetchone()
            statements = []
            if gone:
                statements.append(("DELETE FROM pa_rls_member WHERE subscription_id = %s AND uri IN ("
                                   + placeholders(len(gone)) + ")", [subscription_id, *gone]))
                statements.append(("UPDATE pa_rls_backend SET due_at = 0 WHERE event = %s"
                                   " AND subscriber = %s AND resource IN ("
                                   + placeholders(len(gone)) + ")", [event, watcher, *gone]))
            added = []
            for uri, (i, presentity, name) in wanted.items():
                if uri in current:
                    statements.append(("UPDATE pa_rls_member SET position = %s, name = %s"
                                       " WHERE subscription_id = %s AND uri = %s",
                                       (i, name, subscription_id, uri)))
                else:
                    remote = backend.remote(presentity)
                    added += [uri] if remote else []
                    statements.append((_INSERT_MEMBER, (subscription_id, i, uri, presentity,
                                                        name, BACKEND if remote else LOCAL, "")))
            statements += _backend_statements(subscription_id, event, watcher, added,
                                              backend.limit)
            statements.append(("UPDATE pa_rls_subscription SET full_due = 1, pending = 1"
                               " WHERE subscription_id = %s", (subscription_id,)))
            s.batch(*statements)
            s.commit()
            return True
        return self.db.transaction(work)

    def claim_pending(self, now: int, deadline: int, interval: int, limit: int,
                      ids: list[int] | None = None,
                      rate_limited: bool = True) -> list[Subscription]:
        """The list subscriptions whose members changed, whose rate limit
        lets a NOTIFY go now and that have none in flight (of `ids` when
        given): each gets the CSeq of that NOTIFY, in flight until
        `deadline`.  SKIP LOCKED: every process and node shares the work."""
        def work(s):
            only = (" AND s.id IN (" + placeholders(len(ids)) + ")") if ids else ""
            s.execute("SELECT " + SUB_COLS_S + " FROM pa_rls_subscription r"
                      " JOIN pa_subscription s ON s.id = r.subscription_id"
                      " WHERE r.pending = 1 AND (r.next_notify_at <= %s OR NOT %s) AND s.notify_deadline = 0"
                      " AND s.expires_at > %s" + only + " ORDER BY r.next_notify_at LIMIT %s"
                      " FOR UPDATE SKIP LOCKED", [now, rate_limited, now, *(ids or []), limit])
            subs = [subscription(row) for row in s.fetchall()]
            if not subs:
                s.rollback()
                return []
            chosen = [sub.id for sub in subs]
            s.batch(("UPDATE pa_subscription SET local_cseq = local_cseq + 1,"
                     " notify_deadline = %s WHERE id IN (" + placeholders(len(chosen)) + ")",
                     [deadline, *chosen]),
                    ("UPDATE pa_rls_subscription SET pending = 0, next_notify_at = %s"
                     " WHERE subscription_id IN (" + placeholders(len(chosen)) + ")",
                     [now + interval, *chosen]))
            s.commit()
            for sub in subs:
                sub.local_cseq += 1
            return subs
        if ids == []:
            return []
        return self.db.transaction(work)


__all__ = ["BACKEND", "LOCAL", "Lists"]
