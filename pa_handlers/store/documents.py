"""Publications (RFC 3903) and the aggregated documents composed from them.

Every change of a presentity's publications is one transaction that first
locks the presentity's pa_document row, so changes of one presentity are
serialised across processes and nodes, and ends by recomposing the
document from the live publications.  `compose` (the compositor's) turns
them, as StoredPublication rows oldest first, into the new document; what
it raises rolls the change back.  Each change returns Recomposed, so that
a change nobody watches costs no fan-out.
"""

from __future__ import annotations

import secrets
from typing import Callable

from ..records import DocumentKey, Recomposed, StoredDocument, StoredPublication
from .common import body_of, select_document, select_watched
from .db import Database, Result, Session, Statement, placeholders

# compose(live publications, the current document or None) -> new document.
Compose = Callable[[list[StoredPublication], "bytes | None"], bytes]
# What the publication timer does with an expired publication:
# on_expiry(origin, parts, now) gives (parts, expires_at) to keep it in a
# new form, or None to remove it.
OnExpiry = Callable[[str, bytes, int], "tuple[bytes, int] | None"]
# An origin's reconciliation: decide(parts by source) gives {source:
# (parts, expires_at)} to insert or update, {source: None} to remove.
Decide = Callable[[dict[str, bytes]], dict[str, "tuple[bytes, int] | None"]]


def _lock_document(key: DocumentKey, now: int) -> Statement:
    # Creates the row if needed; locks it exclusively either way.
    return ("INSERT INTO pa_document (presentity, presence_domain, event, body, updated_at)"
            " VALUES (%s, %s, %s, '', %s) ON DUPLICATE KEY UPDATE version = version",
            (*key, now))


def _select_live(key: DocumentKey, now: int) -> Statement:
    return ("SELECT origin, source, parts, updated_at FROM pa_publication WHERE presentity = %s"
            " AND presence_domain = %s AND event = %s AND expires_at > %s ORDER BY id",
            (*key, now))


def recompose(s: Session, key: DocumentKey, now: int, compose: Compose,
              statements: list[Statement], last: bool = True) -> tuple[Recomposed, list[Result]]:
    """Inside a transaction that locked the document: run `statements` (the
    change), read the live publications and the current document, compose,
    and store the document if it changed (`last`: the transaction's last
    step, whose COMMIT may ride with that UPDATE).  Returns the outcome and
    the statements' results."""
    *done, live, current, watched = s.batch(*statements, _select_live(key, now),
                                            select_document(key), select_watched(key))
    body = compose([StoredPublication(*row) for row in live.rows],
                   current.rows[0][0] if current.rows else None)
    changed = not current.rows or current.rows[0][0] != body
    if changed:
        s.batch(_update_document(key, body, now), commit=last)
    return Recomposed(changed, bool(watched.rows[0][0])), done


def _update_document(key: DocumentKey, body: bytes, now: int) -> Statement:
    return ("UPDATE pa_document SET body = %s, version = version + 1, updated_at = %s"
            " WHERE presentity = %s AND presence_domain = %s AND event = %s",
            (body, now, *key))


def _displaced(rows, new_id: int, source: str, max_publications: int) -> tuple[set, set]:
    """Of a presentity's publications (rows of id, origin, source, parts,
    expires_at, updated_at), the ids a new publication (`new_id`, from
    `source`) displaces: the earlier PUBLISH-made ones of the same source
    (superseded), and beyond those, the PUBLISH-made ones refreshed least
    recently that would make more than `max_publications` (evicted)."""
    made = [row for row in rows if row[1] == "publish" and row[0] != new_id]
    superseded = {row[0] for row in made if source and row[2] == source}
    others = sorted((row for row in made if row[0] not in superseded),
                    key=lambda row: (row[5], row[0]), reverse=True)
    return superseded, {row[0] for row in others[max(0, max_publications - 1):]}


class Documents:
    def __init__(self, db: Database):
        self.db = db

    def refresh(self, key: DocumentKey, etag: str, new_etag: str, expires_at: int,
                now: int) -> bool:
        """Extend a publication and give it a new entity-tag; False when the
        entity-tag is unknown or expired (412).  The document is unchanged."""
        return self.db.run(lambda s: s.execute(
            "UPDATE pa_publication SET etag = %s, expires_at = %s, updated_at = %s"
            " WHERE etag = %s AND presentity = %s AND presence_domain = %s AND event = %s"
            " AND expires_at > %s", (new_etag, expires_at, now, etag, *key, now)) == 1)

    def add(self, key: DocumentKey, etag: str, source: str, publisher: str,
            content_type: str, parts: bytes, expires_at: int, now: int, compose: Compose,
            max_publications: int) -> tuple[Recomposed, int]:
        """Store a new publication; it supersedes the earlier ones of the
        same source, and evicts the PUBLISH-made publications refreshed
        least recently beyond `max_publications`.  Returns the outcome and
        how many were evicted.  What goes is decided from the rows read to
        compose anyway, so a PUBLISH that supersedes and evicts nothing (the
        common case) is one round trip and the UPDATE of the document."""
        def work(s):
            _, inserted, rows, current, watched = s.batch(
                _lock_document(key, now),
                ("INSERT INTO pa_publication (presentity, presence_domain, event, etag, source,"
                 " publisher, content_type, parts, expires_at, updated_at)"
                 " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                 (*key, etag, source, publisher, content_type, parts, expires_at, now)),
                ("SELECT id, origin, source, parts, expires_at, updated_at FROM pa_publication"
                 " WHERE presentity = %s AND presence_domain = %s AND event = %s ORDER BY id",
                 tuple(key)),
                select_document(key), select_watched(key))
            superseded, evicted = _displaced(rows.rows, inserted.lastrowid, source,
                                             max_publications)
            gone = superseded | evicted
            body = compose([StoredPublication(origin, src, doc, updated)
                            for pub_id, origin, src, doc, expiry, updated in rows.rows
                            if expiry > now and pub_id not in gone],
                           current.rows[0][0] if current.rows else None)
            changed = not current.rows or current.rows[0][0] != body
            statements = []
            if gone:
                statements.append(("DELETE FROM pa_publication WHERE id IN ("
                                   + placeholders(len(gone)) + ")", sorted(gone)))
            if changed:
                statements.append(_update_document(key, body, now))
            if statements:
                s.batch(*statements, commit=True)
            return Recomposed(changed, bool(watched.rows[0][0])), len(evicted)
        return self.db.transaction(work)

    def modify(self, key: DocumentKey, etag: str, new_etag: str, content_type: str,
               parts: bytes, expires_at: int, now: int, compose: Compose) -> Recomposed | None:
        """Replace a publication's document; None when the entity-tag is
        unknown or expired."""
        return self._conditional(key, now, compose, (
            "UPDATE pa_publication SET etag = %s, content_type = %s, parts = %s,"
            " expires_at = %s, updated_at = %s WHERE etag = %s AND presentity = %s"
            " AND presence_domain = %s AND event = %s AND expires_at > %s",
            (new_etag, content_type, parts, expires_at, now, etag, *key, now)))

    def remove(self, key: DocumentKey, etag: str, now: int,
               compose: Compose) -> Recomposed | None:
        """Remove a publication (Expires: 0); None when the entity-tag is
        unknown or expired."""
        return self._conditional(key, now, compose, (
            "DELETE FROM pa_publication WHERE etag = %s AND presentity = %s"
            " AND presence_domain = %s AND event = %s AND expires_at > %s", (etag, *key, now)))

    def _conditional(self, key, now, compose, change: Statement) -> Recomposed | None:
        def work(s):
            _, found = s.batch(_lock_document(key, now), change)
            if found.rowcount != 1:
                s.rollback()
                return None
            return recompose(s, key, now, compose, [])[0]
        return self.db.transaction(work)

    def with_expired_publications(self, now: int, limit: int) -> list[DocumentKey]:
        def work(s):
            s.execute("SELECT DISTINCT presentity, presence_domain, event FROM pa_publication"
                      " WHERE expires_at <= %s LIMIT %s", (now, limit))
            return [DocumentKey(*row) for row in s.fetchall()]
        return self.db.run(work)

    def expire(self, key: DocumentKey, now: int, compose: Compose,
               on_expiry: OnExpiry) -> Recomposed:
        """Handle the presentity's expired publications.  When several
        timers race for one presentity, the first handles the rows and the
        others find none: one change, one fan-out."""
        def work(s):
            _, expired = s.batch(_lock_document(key, now), (
                "SELECT id, origin, parts FROM pa_publication WHERE presentity = %s"
                " AND presence_domain = %s AND event = %s AND expires_at <= %s", (*key, now)))
            if not expired.rows:
                s.rollback()
                return Recomposed(False, False)
            statements = []
            for pub_id, origin, parts in expired.rows:
                kept = on_expiry(origin, parts, now)
                if kept is None:
                    statements.append(("DELETE FROM pa_publication WHERE id = %s", (pub_id,)))
                else:
                    statements.append(("UPDATE pa_publication SET parts = %s, expires_at = %s,"
                                       " updated_at = %s WHERE id = %s", (*kept, now, pub_id)))
            return recompose(s, key, now, compose, statements)[0]
        return self.db.transaction(work)

    def reconcile(self, key: DocumentKey, origin: str, decide: Decide, now: int,
                  compose: Compose) -> Recomposed:
        """Reconcile the publications one origin (the registrar, the XMPP
        gateway) keeps for a presentity with what `decide` says.  An update
        of expiry alone recomposes nothing."""
        def work(s):
            _, current = s.batch(_lock_document(key, now), (
                "SELECT source, parts, expires_at FROM pa_publication WHERE presentity = %s"
                " AND presence_domain = %s AND event = %s AND origin = %s", (*key, origin)))
            existing = {source: (parts, expires_at) for source, parts, expires_at in current.rows}
            statements, changes = _reconciliation(key, origin, existing,
                                                  decide({k: p for k, (p, _) in existing.items()}),
                                                  now)
            if not changes:
                if statements:
                    s.batch(*statements)
                return Recomposed(False, False)
            return recompose(s, key, now, compose, statements)[0]
        return self.db.transaction(work)

    def extend_origin(self, origin: str, domain: str, expires_at: int) -> None:
        """Keep alive every publication one origin made in a domain."""
        self.db.run(lambda s: s.execute(
            "UPDATE pa_publication SET expires_at = %s WHERE origin = %s"
            " AND presence_domain = %s", (expires_at, origin, domain)))

    def current(self, key: DocumentKey) -> StoredDocument:
        """A presentity's document and its version."""
        def work(s):
            s.execute("SELECT version, body FROM pa_document WHERE presentity = %s"
                      " AND presence_domain = %s AND event = %s", tuple(key))
            row = s.fetchone()
            return StoredDocument(row[0], row[1]) if row else StoredDocument(0, None)
        return self.db.run(work)

    def body(self, key: DocumentKey) -> bytes | None:
        """A presentity's document (None: nothing published)."""
        return self.db.run(lambda s: body_of(s.batch(select_document(key))[0]))


def _reconciliation(key: DocumentKey, origin: str, existing: dict, decided: dict,
                    now: int) -> tuple[list[Statement], bool]:
    """The statements that make an origin's publications what was decided,
    and whether the document must be composed again."""
    statements, recompose_needed = [], False
    for source, change in decided.items():
        old = existing.get(source)
        if change is None:
            if old is not None:
                statements.append(("DELETE FROM pa_publication WHERE presentity = %s"
                                   " AND presence_domain = %s AND event = %s AND origin = %s"
                                   " AND source = %s", (*key, origin, source)))
                recompose_needed = True
            continue
        parts, expires_at = change
        if old is None:
            statements.append((
                "INSERT INTO pa_publication (presentity, presence_domain, event, etag,"
                " origin, source, content_type, parts, expires_at, updated_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, '', %s, %s, %s)",
                (*key, origin + "-" + secrets.token_urlsafe(12), origin, source, parts,
                 expires_at, now)))
            recompose_needed = True
        elif old != (parts, expires_at):
            statements.append((
                "UPDATE pa_publication SET parts = %s, expires_at = %s, updated_at = %s"
                " WHERE presentity = %s AND presence_domain = %s AND event = %s"
                " AND origin = %s AND source = %s", (parts, expires_at, now, *key, origin, source)))
            # Recompose when the content changed, or when a publication the
            # timer had not yet swept comes back to life.
            recompose_needed = recompose_needed or old[0] != parts or old[1] <= now
    return statements, recompose_needed
