"""SQL that more than one repository of the store speaks: the columns of a
subscription, and how a presentity's document and its watchers are read."""

from __future__ import annotations

from ..records import COLUMNS, DocumentKey, Subscription
from .db import Statement, placeholders

SUB_COLS = ", ".join(COLUMNS)
SUB_COLS_S = ", ".join("s." + c for c in COLUMNS)
N_SUB = len(COLUMNS)
INSERT_COLS = [c for c in COLUMNS if c not in ("id", "sent_version", "told_version")]
# The version of a subscription's document now (0: none), in an UPDATE of
# pa_subscription: what a NOTIFY built after it carries at least.
DOCUMENT_VERSION = ("COALESCE((SELECT d.version FROM pa_document d"
                    " WHERE d.presentity = pa_subscription.presentity"
                    " AND d.presence_domain = pa_subscription.presence_domain"
                    " AND d.event = pa_subscription.event), 0)")
DIALOG = "call_id = %s AND local_tag = %s AND remote_tag = %s"
# FROM and WHERE of a subscription (s), found by its dialog, with its
# presentity's document (d.body).
DIALOG_WITH_DOCUMENT = (" FROM pa_subscription s LEFT JOIN pa_document d"
                        " ON d.presentity = s.presentity AND d.presence_domain = s.presence_domain"
                        " AND d.event = s.event"
                        " WHERE s.call_id = %s AND s.local_tag = %s AND s.remote_tag = %s")
# Work for Kamailio's timer, left by processes that cannot send SIP.
INSERT_TASK = ("INSERT INTO pa_task (kind, presentity, presence_domain, argument, created_at)"
               " VALUES (%s, %s, %s, %s, %s)")
# Chunks of keys per IN (...) list, so that no statement grows without bound.
IN_CHUNK = 500


def subscription(row) -> Subscription:
    return Subscription(*row[:N_SUB])


def select_document(key: DocumentKey) -> Statement:
    return ("SELECT body FROM pa_document WHERE presentity = %s AND presence_domain = %s"
            " AND event = %s", tuple(key))


def select_documents(keys: list[DocumentKey]) -> Statement:
    return ("SELECT presentity, presence_domain, event, body FROM pa_document"
            " WHERE (presentity, presence_domain, event) IN ("
            + placeholders(len(keys), "(%s, %s, %s)") + ")",
            [v for key in keys for v in key])


def select_watched(key: DocumentKey, lists: bool = True) -> Statement:
    """Whether anyone actively watches `key`: a subscription to it, or (if
    `lists`: its event is one a list may be of) a list subscription with
    it among its local members."""
    if not lists:
        # Half the statement's cost in the server, and always false for an
        # event no list is of (watcher information).
        return ("SELECT EXISTS (SELECT 1 FROM pa_subscription WHERE presentity = %s"
                " AND presence_domain = %s AND event = %s AND status = 'active')", tuple(key))
    return ("SELECT EXISTS (SELECT 1 FROM pa_subscription WHERE presentity = %s"
            " AND presence_domain = %s AND event = %s AND status = 'active')"
            " OR EXISTS (SELECT 1 FROM pa_rls_member m JOIN pa_subscription s"
            " ON s.id = m.subscription_id WHERE m.presentity = %s AND m.source = 'local'"
            " AND s.presence_domain = %s AND s.event = %s)", tuple(key) + tuple(key))


def body_of(result) -> bytes | None:
    """The document a select_document statement found (None: none)."""
    return result.rows[0][0] if result.rows else None


def documents_by_key(rows) -> dict[DocumentKey, bytes]:
    """Rows of select_documents by their key."""
    return {DocumentKey(*row[:3]): row[3] for row in rows}
