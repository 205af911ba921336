"""Presence that follows SIP registrations (SER's registrar domain).

Every binding of an address-of-record to a contact (RFC 3261 10) is one
tuple of the presentity: open while registered, with the contact and its
q-value as priority.  Each binding is stored as a publication of origin
'registrar', keyed by usrloc's ruid, and aggregates with PUBLISHed state.
A binding that is removed, replaced or expires turns its tuple closed; the
closed tuple lingers for one timer interval so watchers see it close, then
goes away.  A re-registration that changes nothing notifies nobody.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from xml.sax.saxutils import escape

from . import pidf
from .compositor import composer
from .config import Settings
from .messages import Notify
from .notifier import Notifier
from .sip import parse_uri
from .store import Store

log = logging.getLogger("pa.registration")

ORIGIN = "registrar"
EVENT = "presence"


@dataclasses.dataclass(frozen=True)
class Binding:
    """A registered contact, as usrloc reports it."""
    contact: str
    q: float | None       # None: the REGISTER gave no q-value
    expires_at: int
    key: str              # usrloc's ruid: stable while the binding lives


def binding_tuple(tuple_id: str, basic: str, contact: str, priority: str) -> pidf.Parts:
    xml = (f'<tuple xmlns="{pidf.PIDF_NS}" id="{tuple_id}"><status><basic>{basic}</basic>'
           f'</status><contact priority="{priority}">{escape(contact)}</contact></tuple>')
    return pidf.Parts([pidf.Tuple(tuple_id, basic, contact, priority, xml)], [], [])


def _tuple_id(key: str) -> str:
    return "reg-" + re.sub(r"[^A-Za-z0-9._-]", "-", key)[:100]


class Registrations:
    def __init__(self, notifier: Notifier):
        self.notifier = notifier
        self.settings: Settings = notifier.settings
        self.store: Store = notifier.store
        self.now = notifier.now

    def _closed(self, parts: bytes) -> bytes | None:
        """The closed form of a stored binding tuple, or None when it is
        closed already."""
        t = pidf.Parts.loads(parts).tuples[0]
        if t.basic == "closed":
            return None
        return binding_tuple(t.id, "closed", t.contact, t.priority).dumps()

    def bindings_changed(self, domain: str, aor: str, bindings: list[Binding]) -> list[Notify]:
        """The AOR's complete set of bindings after a REGISTER was saved."""
        presentity = parse_uri(aor).aor
        now = self.now()
        wanted = {}
        for b in bindings:
            priority = pidf.qvalue(b.q if b.q is not None else self.settings.default_priority)
            parts = binding_tuple(_tuple_id(b.key), "open", b.contact, priority).dumps()
            wanted["binding:" + b.key] = (parts, b.expires_at)

        def decide(existing: dict[str, bytes]) -> dict[str, tuple[bytes, int]]:
            changes = dict(wanted)
            for source, parts in existing.items():
                if source not in wanted:
                    closed = self._closed(parts)
                    if closed is not None:
                        changes[source] = (closed, now + self.settings.timer_interval)
            return changes

        return self._apply(domain, presentity, decide, now)

    def binding_expired(self, domain: str, aor: str, key: str) -> list[Notify]:
        """usrloc says a binding expired: close its tuple now."""
        presentity = parse_uri(aor).aor
        now = self.now()
        source = "binding:" + key

        def decide(existing: dict[str, bytes]) -> dict[str, tuple[bytes, int]]:
            closed = self._closed(existing[source]) if source in existing else None
            return {source: (closed, now + self.settings.timer_interval)} if closed else {}

        return self._apply(domain, presentity, decide, now)

    def _apply(self, domain, presentity, decide, now) -> list[Notify]:
        key = (presentity, domain, EVENT)
        changed, watched = self.store.change_origin_publications(
            key, ORIGIN, decide, now, composer(presentity, self.settings))
        if changed:
            log.info("registrations of %s changed", presentity)
        return self.notifier.fan_out(key) if changed and watched else []

    def on_expiry(self, origin: str, parts: bytes, now: int) -> tuple[bytes, int] | None:
        """What the publication timer does with an expired publication: a
        binding still open closes and lingers one interval; anything else
        goes."""
        if origin != ORIGIN:
            return None
        closed = self._closed(parts)
        return (closed, now + self.settings.timer_interval) if closed else None
