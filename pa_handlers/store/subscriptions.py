"""Subscriptions (RFC 6665): the dialogs SUBSCRIBEs create, their
refreshes and ends, their expiry, and the decisions that move them.

Each subscription is one pa_subscription row with its whole dialog, so any
process of any node can send its NOTIFYs.  Its local_cseq is the CSeq of
the last NOTIFY sent, taken in the database before the document is read:
the NOTIFY with the highest CSeq always carries the newest state.  At most
one NOTIFY is in flight per subscription (pa_handlers.store.notifications):
a change meanwhile only marks it dirty.
"""

from __future__ import annotations

import dataclasses

from ..records import (DialogResult, DocumentKey, Notifying, Refreshed, Subscription)
from .common import (DIALOG, DIALOG_WITH_DOCUMENT, DOCUMENT_VERSION, INSERT_COLS, N_SUB, SUB_COLS, SUB_COLS_S,
                     body_of, documents_by_key, select_document, select_documents,
                     select_watched, subscription)
from .db import Database, placeholders

# A new subscription, in flight until its first NOTIFY is answered, if its
# watcher and its presentity's event have fewer subscriptions than their
# limits (both counts through an index).
# Its sent_version is its document's version now, read by a subquery; a
# package without partial state never reads sent_version and stores 0, a
# subquery less (INSERT_LIMITED_UNVERSIONED: a tenth of the server's CPU
# for a new subscription).
_INSERT_SELECT = ("INSERT INTO pa_subscription (" + ", ".join(INSERT_COLS)
                  + ", created_at, notify_deadline, sent_version) SELECT "
                  + ", ".join(["%s"] * (len(INSERT_COLS) + 2)))
_LIMITED = (" FROM DUAL WHERE (SELECT COUNT(*) FROM pa_subscription WHERE watcher = %s) < %s"
            " AND (SELECT COUNT(*) FROM pa_subscription WHERE presentity = %s"
            " AND presence_domain = %s AND event = %s) < %s")
INSERT_LIMITED = (_INSERT_SELECT + ", COALESCE((SELECT version FROM pa_document WHERE"
                  " presentity = %s AND presence_domain = %s AND event = %s), 0)" + _LIMITED)
INSERT_LIMITED_UNVERSIONED = _INSERT_SELECT + ", 0" + _LIMITED

# ... and if its Request-URI is no list's (pa_rls_service): a list is
# looked up only when nothing was inserted, so a SUBSCRIBE to a presentity
# costs no round trip for the question.
AND_NOT_A_LIST = " AND NOT EXISTS (SELECT 1 FROM pa_rls_service WHERE uri = %s)"

# In the UPDATE of a change: reserve the CSeq of the NOTIFY that tells it
# (and put that NOTIFY in flight until the deadline given as its
# parameter), or, when one is in flight, only mark the subscription dirty:
# the answer sends the newest state.  Each assignment reads only columns
# assigned after it, so it means the same whether the server assigns left
# to right (MySQL's and MariaDB's default) or all at once
# (SIMULTANEOUS_ASSIGNMENT).
NOTIFY_OR_DIRTY = ("sent_version = IF(notify_deadline = 0, " + DOCUMENT_VERSION
                   + ", sent_version), notify_dirty = (notify_deadline <> 0),"
                   " local_cseq = LAST_INSERT_ID(local_cseq + (notify_deadline = 0)),"
                   " notify_deadline = IF(notify_deadline = 0, %s, notify_deadline)")


class Subscriptions:
    def __init__(self, db: Database):
        self.db = db

    def add(self, sub: Subscription, now: int, deadline: int, limits: tuple[int, int],
            with_document: bool = False, winfo_event: str | None = None,
            unless_list: str | None = None, partial_state: bool = True
            ) -> tuple[bytes | None, bool] | None:
        """Store a new subscription whose first NOTIFY (local_cseq) is about
        to be sent, in flight until `deadline`; None (nothing stored) when
        its watcher already has `limits[0]` subscriptions or the
        presentity's event `limits[1]`, or when `unless_list` is the key of
        a list service (pa_rls_service).  `partial_state`: whether its
        package sends partial state, and so needs sent_version.  The counts and the insert are one
        statement; concurrent inserts may overshoot a limit by at most one
        per database connection.  Returns the presentity's document
        (`with_document`) and whether anyone watches its watcher list
        (`winfo_event`), read after the insert in the same round trip: read
        after the subscription exists, no concurrent change of the document
        can fall between this read and its fan-out."""
        key = sub.key
        values = [getattr(sub, c) for c in INSERT_COLS] + [now, deadline]
        if partial_state:
            sql = INSERT_LIMITED
            values += key
        else:
            sql = INSERT_LIMITED_UNVERSIONED
        values += [sub.watcher, limits[0], *key, limits[1]]
        if unless_list is not None:
            sql += AND_NOT_A_LIST
            values.append(unless_list)
        statements = [(sql, values)]
        statements += _document_and_watched(key, with_document, winfo_event)

        def work(s):
            inserted, *read = s.batch(*statements)
            if inserted.rowcount != 1:
                return None
            sub.id = inserted.lastrowid
            return _read(read, with_document, winfo_event)
        return self.db.run(work)

    def document_and_watched(self, key: DocumentKey, winfo_event: str | None
                             ) -> tuple[bytes | None, bool]:
        """The presentity's document, and whether anyone watches its watcher
        list (`winfo_event`): one round trip."""
        return self.db.run(lambda s: _read(
            s.batch(*_document_and_watched(key, True, winfo_event)), True, winfo_event))

    def watched(self, pairs: list[tuple[str, str]], event: str) -> set[tuple[str, str]]:
        """Which (presentity, domain) pairs have active subscriptions to
        `event`: one round trip for a whole batch."""
        def work(s):
            s.execute("SELECT DISTINCT presentity, presence_domain FROM pa_subscription"
                      " WHERE event = %s AND status = 'active' AND (presentity, presence_domain)"
                      " IN (" + placeholders(len(pairs), "(%s, %s)") + ")",
                      [event] + [v for pair in pairs for v in pair])
            return {tuple(row) for row in s.fetchall()}
        return self.db.run(work) if pairs else set()

    def refresh(self, dialog: tuple[str, str, str], event: str, event_id: str,
                remote_cseq: int, expires_at: int, remote_target: str | None,
                content_type: str | None, deadline: int) -> Refreshed:
        """Extend a subscription and reserve the CSeq of the NOTIFY that
        follows, unless one is in flight.  The CSeq is taken before the
        document is read, so the NOTIFY with the highest CSeq always
        carries the newest document."""
        def work(s):
            update, select = s.batch(
                # A SUBSCRIBE-triggered NOTIFY carries full state (told 0).
                ("UPDATE pa_subscription SET expires_at = %s, told_version = 0,"
                 " remote_target = COALESCE(%s, remote_target),"
                 # A list subscription stays one (RFC 4662 4.5): its type never changes.
                 " content_type = IF(content_type = 'multipart/related', content_type,"
                 " COALESCE(%s, content_type)), remote_cseq = %s, "
                 + NOTIFY_OR_DIRTY +
                 " WHERE " + DIALOG + " AND event = %s AND event_id = %s AND remote_cseq < %s",
                 (expires_at, remote_target, content_type, remote_cseq, deadline,
                  *dialog, event, event_id, remote_cseq)),
                # In the same transaction: notify_dirty as the UPDATE left it.
                ("SELECT " + SUB_COLS_S + ", d.body, s.notify_dirty" + DIALOG_WITH_DOCUMENT
                 + " AND s.event = %s AND s.event_id = %s", (*dialog, event, event_id)),
                commit=True)
            if not select.rows:
                return Refreshed(DialogResult.UNKNOWN)
            if update.rowcount != 1:
                return Refreshed(DialogResult.STALE)
            row = select.rows[0]
            return Refreshed(DialogResult.OK, subscription(row), row[N_SUB], not row[N_SUB + 1])
        return self.db.transaction(work)

    def remove(self, dialog: tuple[str, str, str], event: str, event_id: str,
               remote_cseq: int) -> Refreshed:
        """Delete a subscription the watcher ends (Expires: 0) and return
        it with the CSeq of its final NOTIFY."""
        def work(s):
            s.execute("DELETE FROM pa_subscription WHERE " + DIALOG
                      + " AND event = %s AND event_id = %s AND remote_cseq < %s RETURNING "
                      + SUB_COLS, (*dialog, event, event_id, remote_cseq))
            row = s.fetchone()
            if row is None:
                s.execute("SELECT 1 FROM pa_subscription WHERE " + DIALOG
                          + " AND event = %s AND event_id = %s", (*dialog, event, event_id))
                return Refreshed(DialogResult.STALE if s.fetchone() else DialogResult.UNKNOWN)
            sub = subscription(row)
            sub.local_cseq += 1
            s.execute(*select_document(sub.key))
            doc = s.fetchone()
            return Refreshed(DialogResult.OK, sub, doc[0] if doc else None, True)
        return self.db.run(work)

    def of(self, presentity: str, event: str, now: int,
           domain: str | None = None) -> list[Subscription]:
        """The live subscriptions to a presentity's event package."""
        def work(s):
            s.execute("SELECT " + SUB_COLS + " FROM pa_subscription WHERE presentity = %s"
                      " AND (%s IS NULL OR presence_domain = %s) AND event = %s"
                      " AND expires_at > %s ORDER BY id", (presentity, domain, domain, event, now))
            return [subscription(row) for row in s.fetchall()]
        return self.db.run(work)

    def reauthorize(self, sub: Subscription, status: str, permissions: int,
                    deadline: int) -> tuple[Notifying, bool] | None:
        """Move a subscription to a new status and permissions, if nobody did
        since `sub` was read (else None), reserving the CSeq of the NOTIFY
        that tells the watcher (in flight until `deadline`); returns it
        with the document to send and whether to send it now (not when a
        NOTIFY is in flight: the answer to that one tells the watcher)."""
        def work(s):
            update, doc, dirty = s.batch(
                ("UPDATE pa_subscription SET status = %s, permissions = %s, " + NOTIFY_OR_DIRTY
                 + " WHERE id = %s AND status = %s AND permissions = %s",
                 (status, permissions, deadline, sub.id, sub.status, sub.permissions)),
                select_document(sub.key),
                ("SELECT notify_dirty FROM pa_subscription WHERE id = %s", (sub.id,)),
                commit=True)
            if update.rowcount != 1:
                return None
            new = dataclasses.replace(sub, status=status, permissions=permissions,
                                      local_cseq=update.lastrowid)
            return Notifying(new, body_of(doc)), not dirty.rows[0][0]
        return self.db.transaction(work)

    def end(self, sub: Subscription) -> Subscription | None:
        """Remove a subscription the notifier ends, if it is still as read;
        returns it with the CSeq of its final NOTIFY."""
        def work(s):
            s.execute("DELETE FROM pa_subscription WHERE id = %s AND status = %s"
                      " AND permissions = %s RETURNING " + SUB_COLS,
                      (sub.id, sub.status, sub.permissions))
            row = s.fetchone()
            return _final(subscription(row)) if row else None
        return self.db.run(work)

    def end_call(self, call_id: str) -> list[Subscription]:
        """Remove the subscriptions of a dialog, each with the CSeq of its
        final NOTIFY."""
        def work(s):
            s.execute("DELETE FROM pa_subscription WHERE call_id = %s RETURNING " + SUB_COLS,
                      (call_id,))
            return [_final(subscription(row)) for row in s.fetchall()]
        return self.db.run(work)

    def claim_expired(self, now: int, limit: int) -> list[Notifying]:
        """Remove up to `limit` expired subscriptions and return them with
        the CSeq of their final NOTIFY and their presentity's document.
        SKIP LOCKED lets the timers of every process and node share the
        work, each row claimed once."""
        def work(s):
            s.execute("SELECT " + SUB_COLS + " FROM pa_subscription WHERE expires_at <= %s"
                      " ORDER BY expires_at LIMIT %s FOR UPDATE SKIP LOCKED", (now, limit))
            subs = [subscription(row) for row in s.fetchall()]
            if not subs:
                return []
            keys = list(dict.fromkeys(sub.key for sub in subs if sub.status == "active"))
            statements = [("DELETE FROM pa_subscription WHERE id IN ("
                           + placeholders(len(subs)) + ")", [sub.id for sub in subs])]
            if keys:
                statements.append(select_documents(keys))
            results = s.batch(*statements, commit=True)
            docs = documents_by_key(results[1].rows) if keys else {}
            return [Notifying(_final(sub), docs.get(sub.key)) for sub in subs]
        return self.db.transaction(work)


def _document_and_watched(key: DocumentKey, with_document: bool,
                          winfo_event: str | None) -> list:
    statements = [select_document(key)] if with_document else []
    if winfo_event:
        # Lists are of publishable events only (rls.py), never of watcher
        # information.
        statements.append(select_watched(DocumentKey(key[0], key[1], winfo_event), lists=False))
    return statements


def _read(results, with_document: bool, winfo_event: str | None) -> tuple[bytes | None, bool]:
    results = list(results)
    document = body_of(results.pop(0)) if with_document else None
    watched = bool(results[0].rows[0][0]) if winfo_event else False
    return document, watched


def _final(sub: Subscription) -> Subscription:
    """A subscription that ended, with the CSeq of its final NOTIFY."""
    sub.local_cseq += 1
    return sub
