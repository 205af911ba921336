"""The task queue: work another process asks Kamailio to do.  Processes
outside Kamailio (the XMPP gateway, pa-admin) cannot send SIP; they leave
a task, and the timer of some Kamailio node claims it within a second."""

from __future__ import annotations

from ..records import Task, TaskKind
from .common import INSERT_TASK
from .db import Database, placeholders


class Tasks:
    def __init__(self, db: Database):
        self.db = db

    def enqueue(self, kind: TaskKind, presentity: str, domain: str, now: int,
                argument: str = "") -> None:
        self.db.run(lambda s: s.execute(INSERT_TASK, (kind.value, presentity, domain,
                                                      argument, now)))

    def claim(self, limit: int) -> list[Task]:
        """Take up to `limit` tasks, each once across processes and nodes,
        duplicates merged.  A kind this code does not know (left by a newer
        pa-admin) is taken too, and reported as its text."""
        def work(s):
            s.execute("SELECT id, kind, presentity, presence_domain, argument FROM pa_task"
                      " ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED", (limit,))
            claimed = s.fetchall()
            if not claimed:
                return []
            s.batch(("DELETE FROM pa_task WHERE id IN (" + placeholders(len(claimed)) + ")",
                     [row[0] for row in claimed]), commit=True)
            return list(dict.fromkeys(Task(_kind(row[1]), *row[2:]) for row in claimed))
        return self.db.transaction(work)


def _kind(text: str) -> TaskKind | str:
    try:
        return TaskKind(text)
    except ValueError:
        return text
