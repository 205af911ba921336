"""Back-end subscriptions (sql/007): the SUBSCRIBE dialogs the resource
list server holds upstream for members of other domains, one per
(resource, event, subscriber), shared by every list of that subscriber
and by every node.

Exactly one node acts on a row at a time: the timer claims due rows with
SELECT ... FOR UPDATE SKIP LOCKED and moves their due_at on (a lease)
before the SUBSCRIBE leaves.
"""

from __future__ import annotations

from ..records import ESTABLISHED, IDLE, SENT, BackEndSubscription
from .db import Database, placeholders

_COLS = ("b.id, b.resource, b.event, b.subscriber, b.call_id, b.local_tag, b.remote_tag,"
         " b.remote_target, b.route_set, b.local_contact, b.cseq, b.phase, b.due_at,"
         " b.expires_at, b.failures, b.state, b.reason")

# The list subscriptions of the subscriber that hold the member.
_HOLDERS = (" FROM pa_rls_member m JOIN pa_subscription s ON s.id = m.subscription_id"
            " WHERE m.uri = b.resource AND m.source = 'backend' AND s.event = b.event"
            " AND s.watcher = b.subscriber")


# A back-end subscription for each back-end member (none is created twice:
# one per resource, event and subscriber), due at once, while the
# subscriber holds fewer than its limit.
_INSERT_BACKEND = ("INSERT IGNORE INTO pa_rls_backend (resource, event, subscriber, call_id,"
                   " local_tag) SELECT %s, %s, %s, '', '' FROM DUAL WHERE"
                   " (SELECT COUNT(*) FROM pa_rls_backend WHERE subscriber = %s) < %s")
# A new back-end member starts from what its subscriber's back-end
# subscription already knows (another list of the same subscriber holds
# it); one beyond the subscriber's limit has none: terminated, rejected.
_COPY_BACKEND = ("UPDATE pa_rls_member m"
                 " JOIN pa_rls_subscription r ON r.subscription_id = m.subscription_id"
                 " LEFT JOIN pa_rls_backend b ON b.resource = m.uri"
                 " AND b.event = %s AND b.subscriber = %s"
                 " SET m.state = IF(b.id IS NULL, 'terminated', b.state),"
                 " m.reason = IF(b.id IS NULL, 'rejected', b.reason),"
                 " m.content_type = IFNULL(b.content_type, ''), m.body = b.body,"
                 " m.dirty = 1, r.pending = 1"
                 " WHERE m.subscription_id = %s AND m.source = 'backend'"
                 " AND (b.id IS NULL OR b.state <> '')")


def backend_statements(sub_id: int, event: str, watcher: str, uris: list[str],
                       limit: int) -> list:
    if not uris:
        return []
    return [(_INSERT_BACKEND, (uri, event, watcher, watcher, limit)) for uri in uris] \
        + [(_COPY_BACKEND, (event, watcher, sub_id))]


def _row(row) -> BackEndSubscription:
    return BackEndSubscription(*row)


class BackEnd:
    def __init__(self, db: Database):
        self.db = db

    def claim_due(self, now: int, lease_until: int, limit: int) -> list[BackEndSubscription]:
        """The rows whose time has come (a SUBSCRIBE due, an answer overdue,
        a refresh due, or no longer needed), each with whether a list still
        needs it and the socket and Contact of one such list; leased until
        `lease_until` (no other node takes them meanwhile)."""
        def work(s):
            s.execute("SELECT " + _COLS + ", EXISTS (SELECT 1" + _HOLDERS + "),"
                      " (SELECT s.socket" + _HOLDERS + " LIMIT 1),"
                      " (SELECT s.local_contact" + _HOLDERS + " LIMIT 1)"
                      " FROM pa_rls_backend b WHERE b.due_at <= %s ORDER BY b.due_at LIMIT %s"
                      " FOR UPDATE SKIP LOCKED", (now, limit))
            rows = s.fetchall()
            if not rows:
                s.rollback()
                return []
            claimed = []
            for row in rows:
                sub = _row(row[:17])
                sub.needed, sub.socket = bool(row[17]), row[18] or ""
                if row[19]:
                    sub.local_contact = row[19]
                claimed.append(sub)
            s.execute("UPDATE pa_rls_backend SET due_at = %s WHERE id IN ("
                      + placeholders(len(claimed)) + ")", [lease_until, *(c.id for c in claimed)])
            s.commit()
            return claimed
        return self.db.transaction(work)

    def sending(self, sub: BackEndSubscription, answer_by: int) -> None:
        """A SUBSCRIBE of `sub` (its call_id, local_tag, cseq, contact as
        given) leaves now; unanswered by `answer_by` it has failed."""
        self.db.run(lambda s: s.execute(
            "UPDATE pa_rls_backend SET call_id = %s, local_tag = %s, remote_tag = %s,"
            " remote_target = %s, route_set = %s, local_contact = %s, cseq = %s, phase = %s,"
            " due_at = %s WHERE id = %s",
            (sub.call_id, sub.local_tag, sub.remote_tag, sub.remote_target, sub.route_set,
             sub.local_contact, sub.cseq, SENT, answer_by, sub.id)))

    def remove(self, subscription_id: int) -> None:
        self.db.run(lambda s: s.execute("DELETE FROM pa_rls_backend WHERE id = %s",
                                        (subscription_id,)))

    def of_dialog(self, call_id: str, local_tag: str) -> BackEndSubscription | None:
        def work(s):
            s.execute("SELECT " + _COLS + " FROM pa_rls_backend b WHERE b.call_id = %s"
                      " AND b.local_tag = %s", (call_id, local_tag))
            row = s.fetchone()
            return _row(row) if row else None
        return self.db.run(work) if call_id and local_tag else None

    def established(self, sub_id: int, call_id: str, cseq: int, remote_tag: str,
                    remote_target: str, route_set: str, refresh_at: int,
                    expires_at: int) -> bool:
        """A 2xx answered the SUBSCRIBE with `cseq` (a late answer to an
        older one changes nothing)."""
        def work(s):
            # The route set is the initial SUBSCRIBE's (CSeq 1 of a dialog).
            s.execute("UPDATE pa_rls_backend SET route_set = IF(%s = 1, %s, route_set),"
                      " remote_tag = IF(remote_tag = '', %s, remote_tag),"
                      " remote_target = IF(%s = '', remote_target, %s),"
                      " phase = %s, due_at = %s, expires_at = %s, failures = 0"
                      " WHERE id = %s AND call_id = %s AND cseq = %s AND phase = %s",
                      (cseq, route_set, remote_tag, remote_target, remote_target, ESTABLISHED,
                       refresh_at, expires_at, sub_id, call_id, cseq, SENT))
            return s.rowcount > 0
        return self.db.run(work)

    def dialog_learnt(self, sub_id: int, remote_tag: str, remote_target: str) -> None:
        """A NOTIFY came before the 2xx: it names the notifier's tag and
        target (RFC 6665 4.1.2.4)."""
        self.db.run(lambda s: s.execute(
            "UPDATE pa_rls_backend SET remote_tag = %s,"
            " remote_target = IF(%s = '', remote_target, %s) WHERE id = %s AND remote_tag = ''",
            (remote_tag, remote_target, remote_target, sub_id)))

    def failed(self, sub_id: int, call_id: str, retry_at: int, reason: str, code: int,
               cseq: int | None = None) -> BackEndSubscription | None:
        """The dialog failed (an error answer to the SUBSCRIBE with `cseq`,
        a timeout, a NOTIFY that terminated it): a new initial SUBSCRIBE at
        `retry_at`.  Returns the row as it was, None when the failure was
        about an older dialog or request."""
        def work(s):
            s.execute("SELECT " + _COLS + " FROM pa_rls_backend b WHERE b.id = %s FOR UPDATE",
                      (sub_id,))
            row = s.fetchone()
            if row is None or row[4] != call_id or (cseq is not None and row[10] != cseq):
                s.rollback()
                return None
            # No Call-ID: nothing of the failed dialog matches any more.
            s.execute("UPDATE pa_rls_backend SET phase = %s, due_at = %s, remote_tag = '',"
                      " call_id = '', local_tag = '',"
                      " remote_target = '', route_set = '', failures = failures + 1,"
                      " state = 'terminated', reason = %s, last_code = %s, body = NULL,"
                      " content_type = '' WHERE id = %s", (IDLE, retry_at, reason, code, sub_id))
            s.commit()
            return _row(row)
        return self.db.transaction(work)

    def feed(self, sub: BackEndSubscription, state: str, reason: str, content_type: str,
             body: bytes | None, keep_body: bool = False) -> list[int]:
        """What upstream reported of the member goes to the row and to the
        members of its subscriber's list subscriptions (of its event), and
        only theirs (RFC 4662 7.2), marked changed; returns their list
        subscriptions' ids.  `keep_body`: a NOTIFY without body keeps the
        document last known."""
        def work(s):
            body_set = "" if keep_body else ", b.content_type = %s, b.body = %s"
            member_set = "" if keep_body else ", m.content_type = %s, m.body = %s"
            extra = () if keep_body else (content_type, body)
            _, _, select = s.batch(
                ("UPDATE pa_rls_backend b SET b.state = %s, b.reason = %s" + body_set
                 + " WHERE b.id = %s", (state, reason, *extra, sub.id)),
                ("UPDATE pa_rls_member m JOIN pa_subscription s ON s.id = m.subscription_id"
                 " JOIN pa_rls_subscription r ON r.subscription_id = m.subscription_id"
                 " SET m.state = %s, m.reason = %s" + member_set + ", m.dirty = 1, r.pending = 1"
                 " WHERE m.uri = %s AND m.source = 'backend' AND s.event = %s AND s.watcher = %s",
                 (state, reason, *extra, sub.resource, sub.event, sub.subscriber)),
                ("SELECT m.subscription_id FROM pa_rls_member m JOIN pa_subscription s"
                 " ON s.id = m.subscription_id WHERE m.uri = %s AND m.source = 'backend'"
                 " AND s.event = %s AND s.watcher = %s",
                 (sub.resource, sub.event, sub.subscriber)))
            return [row[0] for row in select.rows]
        return self.db.transaction(work)

    def unneeded_due(self, limit: int = 500) -> int:
        """Back-end subscriptions no list needs any more (their list
        subscriptions ended) are due at once: the timer ends them."""
        def work(s):
            s.execute("UPDATE pa_rls_backend b SET b.due_at = 0 WHERE b.due_at > 0"
                      " AND NOT EXISTS (SELECT 1" + _HOLDERS + ") LIMIT %s", (limit,))
            return s.rowcount
        return self.db.run(work)

    def all(self, limit: int = 1000) -> list[tuple]:
        """For pa-admin: (resource, event, subscriber, phase, state, reason,
        expires_at, failures, last_code, call_id)."""
        def work(s):
            s.execute("SELECT resource, event, subscriber, phase, state, reason, expires_at,"
                      " failures, last_code, call_id FROM pa_rls_backend"
                      " ORDER BY subscriber, resource LIMIT %s", (limit,))
            return list(s.fetchall())
        return self.db.run(work)


__all__ = ["BackEnd", "ESTABLISHED", "IDLE", "SENT"]
