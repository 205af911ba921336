"""All SQL of the presence agent, split by aggregate: one repository per
kind of state, each over the process's one database connection (db.py,
which also owns transactions).  The store returns rows as the small
records of pa_handlers.records and never builds a role's, a format's or
the gateway's objects.

    subscriptions   the dialogs SUBSCRIBEs create (RFC 6665)
    notifications   the NOTIFY in flight of each subscription
    documents       publications (RFC 3903) and the documents composed of them
    decisions       authorization: decisions, XCAP documents, nonces, secrets, credentials
    tasks           work left for Kamailio by processes that cannot send SIP
    xmpp            the XMPP gateway's links and resources
    lists           the resource list server: list URIs, list subscriptions, members
    backend         its back-end subscriptions (members of other domains)
    admin           pa-admin, statistics, users, the schema
    native          import from Kamailio's native presence
"""

from __future__ import annotations

from .admin import Admin, Counts
from .backend import BackEnd
from .db import Database, StoreUnavailable, warn_outage
from .decisions import Decisions
from .documents import Documents
from .lists import Lists
from .native import ImportedDecision, ImportedPublication, Native
from .notifications import Notifications
from .subscriptions import Subscriptions
from .tasks import Tasks
from .xmpp import Xmpp

__all__ = ["SCHEMA_VERSION", "Admin", "BackEnd", "Counts", "Database", "Decisions", "Documents",
           "ImportedDecision", "ImportedPublication", "Lists", "Native", "Notifications", "Store",
           "StoreUnavailable", "Subscriptions", "Tasks", "Xmpp", "warn_outage"]

# The schema version this code needs (the newest file of sql/).
SCHEMA_VERSION = 7


class Store:
    """Every repository over one database; each role is given the ones it
    uses."""

    def __init__(self, db: Database):
        self.db = db
        self.subscriptions = Subscriptions(db)
        self.notifications = Notifications(db)
        self.documents = Documents(db)
        self.decisions = Decisions(db)
        self.tasks = Tasks(db)
        self.xmpp = Xmpp(db)
        self.admin = Admin(db)
        self.native = Native(db)
        self.lists = Lists(db)
        self.backend = BackEnd(db)
