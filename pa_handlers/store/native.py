"""Import from Kamailio's native presence module (pa-admin import-native,
pa_handlers.native_import): the reads of its tables (`presentity`,
`active_watchers`, `watchers`; run on a Native over the native module's
database), and the one transaction that carries their live state into
ours."""

from __future__ import annotations

from typing import Callable, NamedTuple

from ..records import DocumentKey, Subscription, TaskKind
from .common import INSERT_COLS, INSERT_TASK, IN_CHUNK
from .db import Database, Session, placeholders
from .documents import Compose, _lock_document, recompose

# The columns of Kamailio's presence module (5.x schema) the import reads.
NATIVE_COLUMNS = {
    "presentity": ("id", "username", "domain", "event", "etag", "expires", "received_time",
                   "body", "sender", "ruid"),
    "active_watchers": ("id", "presentity_uri", "watcher_username", "watcher_domain", "to_user",
                        "to_domain", "from_user", "from_domain", "event", "event_id", "to_tag",
                        "from_tag", "callid", "local_cseq", "remote_cseq", "contact",
                        "record_route", "expires", "status", "reason", "version", "socket_info",
                        "local_contact"),
    "watchers": ("id", "presentity_uri", "watcher_username", "watcher_domain", "event", "status",
                 "reason", "inserted_time"),
}

_INSERT_SUBSCRIPTION = ("INSERT INTO pa_subscription (" + ", ".join(INSERT_COLS)
                        + ", created_at) VALUES (" + ", ".join(["%s"] * (len(INSERT_COLS) + 1))
                        + ")")


class ImportedPublication(NamedTuple):
    key: DocumentKey
    etag: str
    source: str
    publisher: str
    content_type: str
    parts: bytes
    expires_at: int
    updated_at: int


class ImportedDecision(NamedTuple):
    presentity: str
    watcher: str
    presence_domain: str
    event: str
    status: str
    reason: str
    updated_at: int


class Native:
    def __init__(self, db: Database):
        self.db = db

    # -- the native module's tables ---------------------------------------------

    def missing(self) -> list[str]:
        """What this database lacks of the native presence module's tables:
        'table' for a missing table, 'table.column' for a missing column."""
        def work(s):
            s.execute("SELECT table_name, column_name FROM information_schema.columns"
                      " WHERE table_schema = DATABASE() AND table_name IN ("
                      + placeholders(len(NATIVE_COLUMNS)) + ")", tuple(NATIVE_COLUMNS))
            return {(str(t), str(c)) for t, c in s.fetchall()}
        present = self.db.run(work)
        tables = {t for t, _ in present}
        missing = []
        for table, columns in NATIVE_COLUMNS.items():
            if table not in tables:
                missing.append(table)
            else:
                missing += [f"{table}.{c}" for c in columns if (table, c) not in present]
        return missing

    def _rows(self, table: str, where: str, args: tuple) -> list[dict]:
        columns = NATIVE_COLUMNS[table]

        def work(s):
            s.execute("SELECT " + ", ".join(columns) + " FROM " + table + where
                      + " ORDER BY id", args)
            return [dict(zip(columns, row)) for row in s.fetchall()]
        return self.db.run(work)

    def publications(self, now: int) -> list[dict]:
        """The live rows of `presentity`, oldest first (the order in which
        our aggregate lists publications of equal standing)."""
        rows = self._rows("presentity", " WHERE expires > %s", (now,))
        return sorted(rows, key=lambda r: (r["received_time"], r["id"]))

    def subscriptions(self, now: int) -> list[dict]:
        """The live rows of `active_watchers` (expires is absolute there)."""
        return self._rows("active_watchers", " WHERE expires > %s", (now,))

    def decisions(self) -> list[dict]:
        """The rows of `watchers`: authorization decisions, which do not expire."""
        return self._rows("watchers", "", ())

    # -- into ours ----------------------------------------------------------------

    def import_state(self, publications: list[ImportedPublication],
                     subscriptions: list[Subscription], decisions: list[ImportedDecision],
                     now: int, composer: Callable[[DocumentKey], Compose],
                     notified: Callable[[Subscription], bool]) -> dict:
        """Insert, in one transaction, what is not there yet: publications
        (one is there when its entity-tag or its source, which names the
        native row, is), subscriptions (by dialog) and decisions (by their
        key).  Recomposes the document of every presentity that got a
        publication (`composer(key)`, the compositor's), and leaves
        a fan-out task for each presentity that got a publication or a
        subscription `notified` says is told the document: pa-admin cannot
        send SIP, and the first Kamailio timer then tells the imported
        watchers the current document.  Returns the numbers inserted and
        found already present."""
        def work(s):
            etags = _existing(s, "SELECT etag FROM pa_publication WHERE etag IN", "(%s)",
                              [(p.etag,) for p in publications])
            sources = _existing(s, "SELECT presentity, presence_domain, event, source"
                                " FROM pa_publication WHERE (presentity, presence_domain, event,"
                                " source) IN", "(%s, %s, %s, %s)",
                                [(*p.key, p.source) for p in publications])
            dialogs = _existing(s, "SELECT call_id, local_tag, remote_tag FROM pa_subscription"
                                " WHERE (call_id, local_tag, remote_tag) IN", "(%s, %s, %s)",
                                [sub.dialog for sub in subscriptions])
            decided = _existing(s, "SELECT presentity, watcher, presence_domain, event"
                                " FROM pa_watcher WHERE (presentity, watcher, presence_domain,"
                                " event) IN", "(%s, %s, %s, %s)", [_decided(d) for d in decisions])
            new_pubs = [p for p in publications
                        if (p.etag,) not in etags and (*p.key, p.source) not in sources]
            new_subs = [sub for sub in subscriptions if sub.dialog not in dialogs]
            new_decisions = [d for d in decisions if _decided(d) not in decided]
            keys = sorted({p.key for p in new_pubs})
            # Lock the documents first, in a fixed order, as every change of
            # publications does: a PUBLISH meanwhile waits for us.
            for key in keys:
                s.execute(*_lock_document(key, now))
            s.executemany("INSERT INTO pa_publication (presentity, presence_domain, event,"
                          " etag, source, publisher, content_type, parts, expires_at, updated_at)"
                          " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                          [(*p.key, *p[1:]) for p in new_pubs])
            s.executemany(_INSERT_SUBSCRIPTION,
                          [[getattr(sub, c) for c in INSERT_COLS] + [now] for sub in new_subs])
            s.executemany("INSERT INTO pa_watcher (presentity, watcher, presence_domain,"
                          " event, status, reason, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                          new_decisions)
            for key in keys:
                recompose(s, key, now, composer(key), [], last=False)
            # A fan-out task names its event package in its argument.
            fan_outs = sorted(set(keys) | {sub.key for sub in new_subs if notified(sub)})
            s.executemany(INSERT_TASK, [(TaskKind.FAN_OUT.value, key.presentity,
                                         key.presence_domain, key.event, now)
                                        for key in fan_outs])
            present = (len(publications) - len(new_pubs) + len(subscriptions) - len(new_subs)
                       + len(decisions) - len(new_decisions))
            return {"publications": len(new_pubs), "subscriptions": len(new_subs),
                    "decisions": len(new_decisions), "already present": present}
        return self.db.transaction(work)


def _decided(d: ImportedDecision) -> tuple:
    """What names a decision (pa_watcher's key)."""
    return (d.presentity, d.watcher, d.presence_domain, d.event)


def _existing(s: Session, select_in: str, one: str, keys: list[tuple]) -> set[tuple]:
    """Which of `keys` the query `select_in (one, one, ...)` finds, asked
    in chunks so that no statement grows without bound."""
    found: set[tuple] = set()
    keys = list(dict.fromkeys(keys))
    for start in range(0, len(keys), IN_CHUNK):
        chunk = keys[start:start + IN_CHUNK]
        s.execute(select_in + " (" + placeholders(len(chunk), one) + ")",
                  [v for key in chunk for v in key])
        found.update(tuple(row) for row in s.fetchall())
    return found
