"""The documents of the reg event package (RFC 3680): the registration
state of an address-of-record, straight from the registrar's bindings
(usrloc), like presence in the registrar domain.  Nobody PUBLISHes it.

Each binding is one publication of origin 'registrar' (registration.py
keeps them), holding its contact as the document shows it: state
active|terminated, the event that last changed it (registered,
refreshed, shortened, unregistered, expired), the expiry granted,
q, Call-ID and CSeq.  A binding that ends stays terminated for one timer
interval, so that watchers see it leave, then goes.  The document has one
<registration> for the AOR, active while a contact is, else init (never
registered, or all gone: 4.7.1 forbids reporting terminated -> init).

The first NOTIFY, and every one a SUBSCRIBE triggers, carries full state;
one that tells a change only the contacts changed or gone since the
document the watcher acknowledged (RFC 3680 4.7.2, partial_state.py).
`version` is the subscription's own count of NOTIFYs from 0.
"""

from __future__ import annotations

import hashlib
import json
from xml.sax.saxutils import escape, quoteattr

from . import partial_state, pidf
from .config import Settings
from .package_documents import VersionedDocuments
from .records import StoredPublication, Subscription

REGINFO = "application/reginfo+xml"
NS = "urn:ietf:params:xml:ns:reginfo"
ACTIVE, TERMINATED = "active", "terminated"
REGISTERED, REFRESHED, SHORTENED = "registered", "refreshed", "shortened"
UNREGISTERED, EXPIRED = "unregistered", "expired"


def contact(contact_id: str, uri: str, state: str, event: str, expires: int,
            q: float | None, call_id: str, cseq: int, expires_at: int) -> bytes:
    """A binding's stored parts (`expires`: the time granted, as shown)."""
    return json.dumps({"id": contact_id, "uri": uri, "state": state, "event": event,
                       "expires": expires, "q": q, "callid": call_id,
                       "cseq": cseq, "expires_at": expires_at}).encode()


def ended(parts: bytes, event: str) -> bytes | None:
    """The terminated form of a stored contact, None when it is already."""
    c = json.loads(parts)
    if c["state"] == TERMINATED:
        return None
    c.update(state=TERMINATED, event=event, expires=0)
    return json.dumps(c).encode()


def event_of(old: bytes | None, expires_at: int, old_expires_at: int | None) -> str:
    """What a REGISTER did to a binding (RFC 3680 5.1): a new one is
    registered; one registered again refreshed, or shortened when it ends
    sooner than before."""
    if old is None or json.loads(old)["state"] == TERMINATED:
        return REGISTERED
    if old_expires_at is not None and expires_at < old_expires_at:
        return SHORTENED
    return REFRESHED


def _contact_xml(c: dict) -> str:
    attrs = f' id={quoteattr(c["id"])} state="{c["state"]}" event="{c["event"]}"'
    if c["state"] == ACTIVE:
        attrs += f' expires="{max(int(c["expires"]), 0)}"'
    if c.get("q") is not None:
        attrs += f' q="{pidf.qvalue(c["q"])}"'
    if c.get("callid"):
        attrs += f' callid={quoteattr(c["callid"])}'
    if c.get("cseq"):
        attrs += f' cseq="{int(c["cseq"])}"'
    return f'<contact{attrs}><uri>{escape(c["uri"])}</uri></contact>'


def _gone(contact_id: str, c: dict) -> tuple[dict, bool]:
    """A contact that left the document, as partial state tells it."""
    if c["state"] == TERMINATED:
        return c, True
    return {**c, "state": TERMINATED, "event": EXPIRED, "expires": 0}, False


def _registration_id(aor: str) -> str:
    # The same in every NOTIFY of every subscription (5.1).
    return "r" + hashlib.sha1(aor.encode()).hexdigest()[:16]


class RegDocuments(VersionedDocuments):
    kind = "reginfo"
    formats = (REGINFO,)          # published by nobody: the registrar's state only
    empty_state = "the AOR in state init"

    @staticmethod
    def parse(body: bytes, settings: Settings) -> bytes:
        raise pidf.InvalidDocument("reg Is Not Published")

    @staticmethod
    def compose(presentity: str, stored: list[StoredPublication], settings: Settings,
                refuse: bool, previous: bytes | None = None) -> bytes:
        """The AOR's contacts in the order they were registered
        (partial_state's form, b"" before any)."""
        contacts = [json.loads(p.parts) for p in stored]
        return partial_state.compose([(c["id"], c) for c in contacts], previous, _gone)

    @staticmethod
    def render(document: bytes | None, sub: Subscription, partial: bool = False) -> str:
        """Full state, or with `partial` (a NOTIFY that tells a change) the
        contacts changed or gone since the document the watcher
        acknowledged (RFC 3680 4.7.2)."""
        contacts, changed = partial_state.shown(document, sub.told_version, partial)
        shown = contacts if changed is None else changed
        aor = pidf.entity(sub.presentity)
        registered = "active" if any(c["state"] == ACTIVE for c in contacts) else "init"
        body = "".join(_contact_xml(c) for c in shown)
        registration = (f'<registration aor={quoteattr(aor)}'
                        f' id="{_registration_id(aor)}" state="{registered}"')
        registration += f">{body}</registration>" if body else "/>"
        return (f'<?xml version="1.0" encoding="UTF-8"?>\n<reginfo xmlns="{NS}"'
                f' version="{max(sub.local_cseq - 1, 0)}"'
                f' state="{"full" if changed is None else "partial"}">'
                f"{registration}</reginfo>\n")


REG_DOCUMENTS = RegDocuments()
