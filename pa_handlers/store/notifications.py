"""NOTIFYs in flight (sql/004): at most one per subscription, whichever
process or node sent it; the one with CSeq local_cseq, while
notify_deadline is not 0.  A change meanwhile sets notify_dirty instead of
sending; the answer (or the deadline) then sends the newest state, so a
burst of changes costs a slow watcher one NOTIFY (RFC 3856 6.4), and a
watcher that never answers costs one transaction, not one per change.
Only an answer to the NOTIFY in flight acts: any other changes nothing.
"""

from __future__ import annotations

from ..records import DocumentKey, Notifying, Subscription
from .common import (DIALOG, DIALOG_WITH_DOCUMENT, DOCUMENT_VERSION, IN_CHUNK, N_SUB, SUB_COLS,
                     SUB_COLS_S, body_of, documents_by_key, select_document, select_documents,
                     subscription)
from .db import Database, Statement, placeholders
from .subscriptions import NOTIFY_OR_DIRTY

# The answer to the NOTIFY in flight (CSeq, Call-ID and tags given): it is
# no longer in flight, unless the subscription is dirty, in which case the
# NOTIFY with the newest state takes its place (CSeq + 1, a new deadline).
# A success makes the document it carried the one the watcher has.
_SETTLE = ("UPDATE pa_subscription SET told_version = IF(%s IS NULL, sent_version, told_version),"
           " sent_version = IF(notify_dirty, " + DOCUMENT_VERSION + ", sent_version),"
           " local_cseq = LAST_INSERT_ID(local_cseq + notify_dirty),"
           " notify_deadline = IF(notify_dirty, %s, 0), notify_dirty = 0, notify_retry = 0,"
           " last_notify_code = COALESCE(%s, last_notify_code)"
           " WHERE " + DIALOG + " AND local_cseq = %s AND notify_deadline <> 0")


class Notifications:
    def __init__(self, db: Database):
        self.db = db

    def fan_out(self, key: DocumentKey, now: int,
                deadline: int) -> tuple[list[Subscription], bytes | None]:
        """The active subscriptions of a presentity that get a NOTIFY now,
        each with its CSeq (in flight until `deadline`), and the document
        to send; those with a NOTIFY in flight are marked dirty instead.
        The CSeqs are taken under row locks before the document is read, so
        the highest CSeq always carries the newest document."""
        def work(s):
            s.execute("SELECT " + SUB_COLS + ", notify_deadline FROM pa_subscription"
                      " WHERE presentity = %s AND presence_domain = %s AND event = %s"
                      " AND status = 'active' AND expires_at > %s FOR UPDATE", (*key, now))
            rows = [(subscription(row), row[N_SUB]) for row in s.fetchall()]
            if not rows:
                return [], None
            # Locked: the UPDATE finds each row as read.
            _, doc = s.batch(
                ("UPDATE pa_subscription SET " + NOTIFY_OR_DIRTY + " WHERE id IN ("
                 + placeholders(len(rows)) + ")", [deadline] + [sub.id for sub, _ in rows]),
                select_document(key), commit=True)
            subs = [sub for sub, in_flight in rows if not in_flight]
            for sub in subs:
                sub.local_cseq += 1
            return subs, body_of(doc)
        return self.db.transaction(work)

    def answered(self, dialog: tuple[str, str, str], cseq: int, failure: int | None,
                 deadline: int) -> Notifying | None:
        """The answer to the NOTIFY in flight with CSeq `cseq`, which does
        not end the subscription (`failure`: its code, recorded for
        operators, when not a success).  When the subscription changed
        meanwhile, returns it with the CSeq of the NOTIFY with its newest
        state, now in flight until `deadline`, and its document; otherwise
        (also for an answer to no NOTIFY in flight) None.  One UPDATE by
        the dialog's key; the subscription and its document are read, in a
        second round trip, only when it changed meanwhile."""
        def work(s):
            s.execute(_SETTLE, (failure, deadline, failure, *dialog, cseq))
            if s.rowcount != 1 or s.lastrowid != cseq + 1:
                return None
            s.execute("SELECT " + SUB_COLS_S + ", d.body" + DIALOG_WITH_DOCUMENT
                      + " AND s.local_cseq = %s", (*dialog, cseq + 1))
            row = s.fetchone()
            return Notifying(subscription(row), row[N_SUB]) if row else None
        return self.db.run(work)

    def settle(self, answers: list[tuple[tuple[str, str, str], int]],
               deadline: int) -> list[Notifying]:
        """Successful answers to NOTIFYs, (dialog, CSeq) each, collected
        over a moment: one UPDATE per chunk ends the wait of those whose
        subscription did not change meanwhile.  Those that did (found in
        the same round trip) get, together, the CSeq of the NOTIFY with
        their newest state, in flight until `deadline`, and are returned
        with their documents: one more transaction, whatever their number.
        Answers to no NOTIFY in flight change nothing."""
        changed: list[tuple] = []
        for start in range(0, len(answers), IN_CHUNK):
            changed += self._settle_chunk(answers[start:start + IN_CHUNK])
        if not changed:
            return []

        def work(s):
            # Locked as found (the same NOTIFY still in flight): each moves
            # on once, whatever else answers or sweeps it meanwhile.
            s.execute("SELECT " + SUB_COLS + " FROM pa_subscription WHERE (id, local_cseq) IN ("
                      + placeholders(len(changed), "(%s, %s)") + ") AND notify_deadline <> 0"
                      " AND notify_dirty = 1 FOR UPDATE", [v for pair in changed for v in pair])
            subs = [subscription(row) for row in s.fetchall()]
            if not subs:
                return []
            statements = _newest_state(subs, deadline, retry=0, acked=True)
            for sub in subs:
                sub.told_version = sub.sent_version
            results = s.batch(*statements, commit=True)
            return _with_documents(subs, results[1].rows if len(statements) > 1 else [])
        return self.db.transaction(work)

    def _settle_chunk(self, answers) -> list[tuple]:
        keys = [(*dialog, cseq) for dialog, cseq in answers]
        # The Call-IDs first: their index range is certain to be used.
        where = (" WHERE call_id IN (" + placeholders(len(keys)) + ") AND (call_id,"
                 " local_tag, remote_tag, local_cseq) IN ("
                 + placeholders(len(keys), "(%s, %s, %s, %s)")
                 + ") AND notify_deadline <> 0 AND notify_dirty = ")
        args = [k[0] for k in keys] + [v for k in keys for v in k]

        def work(s):
            settled = s.execute("UPDATE pa_subscription SET told_version = sent_version,"
                                " notify_deadline = 0, notify_retry = 0" + where + "0", args)
            if settled == len(set(keys)):
                return []   # none changed meanwhile: the common case, one statement
            s.execute("SELECT id, local_cseq FROM pa_subscription" + where + "1", args)
            return [tuple(row) for row in s.fetchall()]
        return self.db.run(work)

    def drop_answered(self, dialog: tuple[str, str, str], cseq: int) -> Subscription | None:
        """End a subscription whose watcher answered the NOTIFY in flight
        (CSeq `cseq`) that it is gone, or whose NOTIFY could not be sent;
        None when no such NOTIFY is in flight (an answer that matches
        nothing we wait for changes nothing)."""
        def work(s):
            s.execute("DELETE FROM pa_subscription WHERE " + DIALOG + " AND local_cseq = %s"
                      " AND notify_deadline <> 0 RETURNING " + SUB_COLS, (*dialog, cseq))
            row = s.fetchone()
            return subscription(row) if row else None
        return self.db.run(work)

    def claim_unanswered(self, now: int, limit: int, end: bool, deadline: int
                         ) -> tuple[int, list[Subscription], list[Notifying]]:
        """Up to `limit` subscriptions whose NOTIFY in flight went
        unanswered past its deadline, each claimed once across processes
        and nodes (SKIP LOCKED).  Returns how many, those that end, and
        those that get a NOTIFY with their newest state (with its CSeq, in
        flight until `deadline`, and their document).  With `end`, a
        subscription gets that NOTIFY once, for the answer to the first may
        have been lost with the node that sent it (a restart, a crash), and
        ends when it goes unanswered too; without, each stops waiting, and
        gets the NOTIFY only if it changed meanwhile."""
        def work(s):
            s.execute("SELECT " + SUB_COLS + ", notify_dirty, notify_retry FROM pa_subscription"
                      " WHERE notify_deadline BETWEEN 1 AND %s ORDER BY notify_deadline LIMIT %s"
                      " FOR UPDATE SKIP LOCKED", (now, limit))
            rows = [(subscription(row), row[N_SUB], row[N_SUB + 1]) for row in s.fetchall()]
            if not rows:
                return 0, [], []
            if end:
                gone = [sub for sub, _, retried in rows if retried]
                again = [sub for sub, _, retried in rows if not retried]
            else:
                gone, again = [], [sub for sub, dirty, _ in rows if dirty]
            handled = {sub.id for sub in gone} | {sub.id for sub in again}
            others = [sub for sub, _, _ in rows if sub.id not in handled]
            statements = []
            if gone:
                statements.append(("DELETE FROM pa_subscription WHERE id IN ("
                                   + placeholders(len(gone)) + ")", [sub.id for sub in gone]))
            if others:
                statements.append(("UPDATE pa_subscription SET notify_deadline = 0,"
                                   " notify_retry = 0 WHERE id IN ("
                                   + placeholders(len(others)) + ")", [sub.id for sub in others]))
            newest = _newest_state(again, deadline, retry=int(end)) if again else []
            results = s.batch(*statements, *newest, commit=True)
            documents = results[-1].rows if len(newest) > 1 else []
            return len(rows), gone, _with_documents(again, documents)
        return self.db.transaction(work)


def _newest_state(subs: list[Subscription], deadline: int, retry: int,
                  acked: bool = False) -> list[Statement]:
    """Statements (inside the caller's transaction, the rows locked) that
    give each subscription the CSeq of the NOTIFY with its newest state, in
    flight until `deadline`, and read the documents of the active ones; see
    _with_documents.  `acked`: the NOTIFY in flight was answered 2xx."""
    statements = [("UPDATE pa_subscription SET "
                   + ("told_version = sent_version, " if acked else "")
                   + "sent_version = " + DOCUMENT_VERSION + ", local_cseq = local_cseq + 1,"
                   " notify_deadline = %s, notify_dirty = 0, notify_retry = %s"
                   " WHERE id IN (" + placeholders(len(subs)) + ")",
                   [deadline, retry] + [sub.id for sub in subs])]
    keys = list(dict.fromkeys(sub.key for sub in subs if sub.status == "active"))
    if keys:
        statements.append(select_documents(keys))
    return statements


def _with_documents(subs: list[Subscription], documents: list) -> list[Notifying]:
    """Subscriptions given the CSeq of their next NOTIFY (_newest_state),
    each with its presentity's document (rows of select_documents)."""
    bodies = documents_by_key(documents)
    for sub in subs:
        sub.local_cseq += 1
    return [Notifying(sub, bodies.get(sub.key)) for sub in subs]
