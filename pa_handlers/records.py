"""The plain records that cross module boundaries: what the store returns
and the roles pass around, each named once.  No behaviour here; the store
(pa_handlers.store) builds them from rows and never builds anything else.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Callable, NamedTuple

# -- presence domains ---------------------------------------------------------
#
# The handlers' `domain` argument (SER's pa): where presence state comes
# from besides PUBLISH.  Each is its own namespace of presentities, kept in
# the `presence_domain` columns.

REGISTRAR = "registrar"     # presence follows SIP registrations (usrloc)
JABBER = "jabber"           # presence of XMPP users, fed by the XMPP gateway
PRESENCE_DOMAINS = (REGISTRAR, JABBER)


class DocumentKey(NamedTuple):
    """Whose state: a presentity (user@host) of a presence domain, for one
    event package."""
    presentity: str
    presence_domain: str
    event: str


# -- subscriptions (RFC 6665) ---------------------------------------------------

PENDING = "pending"
ACTIVE = "active"
TERMINATED = "terminated"


@dataclasses.dataclass
class Subscription:
    """The dialog a SUBSCRIBE created and its state: one pa_subscription
    row (the columns, in this order, are COLUMNS)."""
    presence_domain: str
    event: str
    event_id: str
    presentity: str
    watcher: str
    watcher_display: str
    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: str
    remote_uri: str
    remote_target: str
    route_set: str
    local_contact: str
    socket: str
    received: str
    remote_cseq: int
    local_cseq: int
    content_type: str
    status: str
    reason: str
    permissions: int
    expires_at: int
    id: int | None = None
    # The document versions of the NOTIFY in flight and of the one the
    # watcher acknowledged last (partial state, sql/005).
    sent_version: int = 0
    told_version: int = 0

    @property
    def dialog(self) -> tuple[str, str, str]:
        return (self.call_id, self.local_tag, self.remote_tag)

    @property
    def key(self) -> DocumentKey:
        return DocumentKey(self.presentity, self.presence_domain, self.event)

    @property
    def event_header(self) -> str:
        return f"{self.event};id={self.event_id}" if self.event_id else self.event


# Column order of every query that builds a Subscription.
COLUMNS = tuple(f.name for f in dataclasses.fields(Subscription))


class DialogResult(enum.Enum):
    """What became of an in-dialog SUBSCRIBE."""
    OK = "ok"
    UNKNOWN = "unknown"   # no such subscription: 481
    STALE = "stale"       # CSeq not above the last one: 500


class Refreshed(NamedTuple):
    """An in-dialog SUBSCRIBE's outcome: the subscription with the CSeq of
    its next NOTIFY, the document to send, and whether to send it now (not
    while a NOTIFY is in flight: the answer to that one sends the newest)."""
    result: DialogResult
    subscription: Subscription | None = None
    document: bytes | None = None
    send_now: bool = False


class Notifying(NamedTuple):
    """A subscription with the CSeq of the NOTIFY about to be sent, and the
    document it carries (None: nothing published)."""
    subscription: Subscription
    document: bytes | None


# -- authorization --------------------------------------------------------------

class Decision(NamedTuple):
    """A presentity's decision about a watcher (pa_watcher)."""
    status: str
    reason: str


class XcapDocument(NamedTuple):
    """A document of the built-in XCAP server, or the cached copy of one
    from an external XCAP server (body b"" when it has none)."""
    etag: str
    body: bytes
    fetched_at: int


# -- publications -----------------------------------------------------------------

class StoredPublication(NamedTuple):
    """A live publication as composition sees it."""
    origin: str
    source: str
    parts: bytes
    updated_at: int = 0


class Recomposed(NamedTuple):
    """A change of a presentity's publications: whether its document
    changed, and whether anyone watches it (a change nobody watches costs
    no fan-out)."""
    changed: bool
    watched: bool


class StoredDocument(NamedTuple):
    """A presentity's aggregated document and its version (0: none)."""
    version: int
    body: bytes | None


# -- the resource list server (RFC 4662) ------------------------------------------

class ListSubscription(NamedTuple):
    """What makes a subscription a list subscription."""
    subscription_id: int
    list_uri: str
    owner: str          # '' for an ad-hoc list (RFC 5367)
    member_type: str
    full_due: bool


class MemberRow(NamedTuple):
    """A member of a list subscription as stored."""
    uri: str
    presentity: str
    name: str
    source: str
    state: str          # the external source's (source 'backend')
    reason: str
    content_type: str
    body: bytes | None
    sent_state: str
    sent_reason: str
    sent_digest: str


# -- work for Kamailio from other processes ----------------------------------------

class TaskKind(str, enum.Enum):
    FAN_OUT = "fan-out"           # tell a presentity's watchers its document
    REAUTHORIZE = "reauthorize"   # its decisions or rules changed
    REMOVE = "remove"             # end one watcher's subscriptions (argument)
    END = "end"                   # end the subscriptions of a Call-ID (argument)
    SWEEP = "sweep"               # run the expiry sweeps now


class Task(NamedTuple):
    kind: TaskKind
    presentity: str
    presence_domain: str
    argument: str


# -- the XMPP gateway ---------------------------------------------------------------

class XmppResource(NamedTuple):
    """The last presence of one available resource of an XMPP user."""
    resource: str
    shown: str
    status: str
    priority: int


class XmppWatcherUpdate(NamedTuple):
    """An XMPP watcher of a SIP user that waits for authorization, or whose
    SIP user's document changed since it was told."""
    sip_user: str
    jid: str
    state: str
    told_version: int
    version: int
    document: bytes | None


# -- back-end subscriptions (sql/007) ------------------------------------------------

IDLE, SENT, ESTABLISHED = "idle", "sent", "established"


class BackEndPolicy(NamedTuple):
    """Which list members are served by back-end subscriptions (by their
    user@host), and how many back-end subscriptions one subscriber may
    hold (members beyond: terminated, reason rejected)."""
    remote: Callable[[str], bool]
    limit: int


NO_BACKEND = BackEndPolicy(lambda presentity: False, 0)


@dataclasses.dataclass
class BackEndSubscription:
    """A SUBSCRIBE dialog this server holds upstream for a list member of
    another domain, shared by the subscriber's lists (one pa_rls_backend
    row)."""
    id: int
    resource: str
    event: str
    subscriber: str
    call_id: str
    local_tag: str
    remote_tag: str
    remote_target: str
    route_set: str
    local_contact: str
    cseq: int
    phase: str
    due_at: int
    expires_at: int
    failures: int
    state: str
    reason: str
    # Whether some list subscription of the subscriber still holds the
    # member, and the socket of one (where its SUBSCRIBEs leave from).
    needed: bool = True
    socket: str = ""
