"""Presence that follows SIP registrations (SER's registrar domain).

Every binding of an address-of-record to a contact (RFC 3261 10) is one
tuple of the presentity: open while registered, with the contact and its
q-value as priority.  Each binding is stored as a publication of origin
'registrar', keyed by usrloc's ruid, and aggregates with PUBLISHed state.
A binding that is removed, replaced or expires turns its tuple closed; the
closed tuple lingers for one timer interval so watchers see it close, then
goes away.  A re-registration that changes nothing notifies nobody.

The same bindings make the AOR's registration state (RFC 3680, event
package reg, reginfo.py): one publication of origin 'reginfo' per
binding, holding its <contact> (registered, refreshed, shortened,
unregistered, expired), when that package is served.

Each binding also records the device it stands for (its +sip.instance, its
Contact address, the address its REGISTER came from), so that a device
that publishes speaks for itself (precedence.py).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import ipaddress
import logging
import re
from xml.sax.saxutils import escape

from . import pidf, precedence, reginfo
from .clock import Clock
from .compositor import Compositor
from .config import Settings
from .messages import Notify
from .packages import PRESENCE, enabled, usrloc_packages
from .records import DocumentKey
from .sip import BadRequest, parse_uri

log = logging.getLogger("pa.registration")

ORIGIN = precedence.REGISTRAR
# The reg package's publications (one <contact> each).
REG_ORIGIN = "reginfo"


@dataclasses.dataclass(frozen=True)
class Binding:
    """A registered contact, as usrloc reports it."""
    contact: str
    q: float | None       # None: the REGISTER gave no q-value
    expires_at: int
    key: str              # usrloc's ruid: stable while the binding lives
    instance: str = ""    # its +sip.instance (RFC 5626), if any
    source: str = ""      # proto:ip:port its REGISTER came from, when this
                          # REGISTER is the one that wrote it
    received: str = ""    # where to reach it, when not its contact (NAT)
    call_id: str = ""     # of the REGISTER that made or refreshed it
    cseq: int = 0


def binding_tuple(tuple_id: str, basic: str, contact: str, priority: str,
                  devices: list[str] = ()) -> pidf.Parts:
    xml = (f'<tuple xmlns="{pidf.PIDF_NS}" id="{tuple_id}"><status><basic>{basic}</basic>'
           f'</status><contact priority="{priority}">{escape(contact)}</contact></tuple>')
    return pidf.Parts([pidf.Tuple(tuple_id, basic, contact, priority, xml)], [], [],
                      list(devices))


def device_keys(b: Binding, stored: bytes | None) -> list[str]:
    """The keys of the device a binding stands for (see precedence.py).
    The address its REGISTER came from is known only while that REGISTER
    is handled; later REGISTERs of other devices keep the one stored."""
    keys = [precedence.contact_key(b.contact)]
    if b.instance:
        keys.append(precedence.instance_key(b.instance))
    if b.source:
        keys.append(precedence.address_key(b.source))
    elif stored is not None:
        keys += [k for k in pidf.Parts.loads(stored).devices if k.startswith("address:")]
    return keys


def _contact_id(key: str) -> str:
    # Stable while the binding lives (RFC 3680 5.1), and no usrloc ruid shown.
    return "c" + hashlib.sha1(key.encode()).hexdigest()[:16]


def _tuple_id(key: str) -> str:
    return "reg-" + re.sub(r"[^A-Za-z0-9._-]", "-", key)[:100]


class Registrations:
    def __init__(self, settings: Settings, compositor: Compositor, clock: Clock):
        self.settings = settings
        self.compositor = compositor
        self.clock = clock
        served = enabled(settings)
        # The packages besides presence whose state follows the bindings.
        self.reg_events = [p.name for p in usrloc_packages() if p.name in served]

    def _closed(self, parts: bytes) -> bytes | None:
        """The closed form of a stored binding tuple, or None when it is
        closed already."""
        stored = pidf.Parts.loads(parts)
        t = stored.tuples[0]
        if t.basic == "closed":
            return None
        return binding_tuple(t.id, "closed", t.contact, t.priority, stored.devices).dumps()

    def bindings_changed(self, domain: str, aor: str, bindings: list[Binding]) -> list[Notify]:
        """The AOR's complete set of bindings after a REGISTER was saved."""
        presentity = parse_uri(aor).aor
        now = self.clock.now()

        def decide(existing: dict[str, bytes]) -> dict[str, tuple[bytes, int]]:
            changes = {}
            for b in bindings:
                source = "binding:" + b.key
                priority = pidf.qvalue(b.q if b.q is not None else self.settings.default_priority)
                changes[source] = (binding_tuple(_tuple_id(b.key), "open", b.contact, priority,
                                                 device_keys(b, existing.get(source))).dumps(),
                                   b.expires_at)
            for source, parts in existing.items():
                if source not in changes:
                    closed = self._closed(parts)
                    if closed is not None:
                        changes[source] = (closed, now + self.settings.timer_interval)
            return changes

        notifies = self._apply(domain, presentity, decide)
        return notifies + self._reg(domain, presentity, self._reg_bindings(bindings, now))

    def _reg_bindings(self, bindings: list[Binding], now: int):
        """decide() of the reg package's contacts after a REGISTER."""
        def decide(existing: dict[str, bytes]) -> dict[str, tuple[bytes, int] | None]:
            changes: dict[str, tuple[bytes, int] | None] = {}
            for b in bindings:
                source = "binding:" + b.key
                old = existing.get(source)
                old_c = json.loads(old) if old else None
                if old_c and old_c["state"] == reginfo.ACTIVE and \
                        (old_c["callid"], old_c["cseq"], old_c["expires_at"]) == \
                        (b.call_id, b.cseq, b.expires_at):
                    continue    # not this REGISTER's binding: unchanged
                event = reginfo.event_of(old, b.expires_at,
                                         old_c["expires_at"] if old_c else None)
                changes[source] = (reginfo.contact(
                    _contact_id(b.key), b.contact, reginfo.ACTIVE, event,
                    b.expires_at - now, b.q, b.call_id, b.cseq, b.expires_at), b.expires_at)
            for source, parts in existing.items():
                if source not in changes and not any("binding:" + b.key == source
                                                     for b in bindings):
                    gone = reginfo.ended(parts, reginfo.UNREGISTERED)
                    if gone is not None:
                        changes[source] = (gone, now + self.settings.timer_interval)
            return changes
        return decide

    def _reg(self, domain: str, presentity: str, decide) -> list[Notify]:
        notifies: list[Notify] = []
        for event in self.reg_events:
            notifies += self.compositor.reconcile(DocumentKey(presentity, domain, event),
                                                  REG_ORIGIN, decide)
        return notifies

    def binding_expired(self, domain: str, aor: str, key: str) -> list[Notify]:
        """usrloc says a binding expired: close its tuple now."""
        presentity = parse_uri(aor).aor
        now = self.clock.now()
        source = "binding:" + key

        def decide(existing: dict[str, bytes]) -> dict[str, tuple[bytes, int]]:
            closed = self._closed(existing[source]) if source in existing else None
            return {source: (closed, now + self.settings.timer_interval)} if closed else {}

        def decide_reg(existing: dict[str, bytes]) -> dict[str, tuple[bytes, int]]:
            gone = reginfo.ended(existing[source], reginfo.EXPIRED) \
                if source in existing else None
            return {source: (gone, now + self.settings.timer_interval)} if gone else {}

        return self._apply(domain, presentity, decide) + self._reg(domain, presentity, decide_reg)

    def _apply(self, domain, presentity, decide) -> list[Notify]:
        # Bindings are presence tuples (RFC 3856): the presence package's.
        return self.compositor.reconcile(DocumentKey(presentity, domain, PRESENCE.name),
                                         ORIGIN, decide)

    def on_expiry(self, origin: str, parts: bytes, now: int) -> tuple[bytes, int] | None:
        """What the publication timer does with an expired publication: a
        binding still open closes and lingers one interval; anything else
        goes."""
        if origin == REG_ORIGIN:
            gone = reginfo.ended(parts, reginfo.EXPIRED)
            return (gone, now + self.settings.timer_interval) if gone else None
        if origin != ORIGIN:
            return None
        closed = self._closed(parts)
        return (closed, now + self.settings.timer_interval) if closed else None


# -- NOTIFYs to addresses of this registrar -----------------------------------
#
# A watcher may give as its Contact not a device address but one of the
# registrar's: its public GRUU (RFC 5627, e.g. Linphone's
# sip:bob@example.org;gr=urn:uuid:...) or its address-of-record.  A NOTIFY
# to it must go where a proxy would send a request for it: to the
# registered device.

# Asked for every NOTIFY, of the few targets a process sends to: each is
# parsed once (a target is at most 1024 characters, so the cache is bounded).
@functools.lru_cache(maxsize=4096)
def registrar_target(uri: str) -> tuple[str, str] | None:
    """(AOR to look up in usrloc, +sip.instance wanted or "") when a NOTIFY
    target may be an address of this registrar: a public GRUU, or an AOR
    (a host name, no port, no parameters).  None for a device's own
    address (an IP address, a port), which costs no look-up."""
    try:
        parsed = parse_uri(uri)
    except BadRequest:
        return None
    if not parsed.user:
        return None
    aor = f"{parsed.scheme}:{parsed.aor}"
    if "gr" in parsed.params:
        # A temporary GRUU (empty gr) names no AOR: left to the usual route.
        return (aor, parsed.params["gr"]) if parsed.params["gr"] else None
    if parsed.port or parsed.params or _is_ip(parsed.host):
        return None
    return aor, ""


def choose_binding(bindings: list[Binding], instance: str) -> Binding | None:
    """The binding a request for a GRUU (its instance) or for the AOR (the
    highest q-value, the first of equals) goes to."""
    if instance:
        # URNs compare case-insensitively (RFC 8141).
        wanted = precedence.instance_key(instance).lower()
        return next((b for b in bindings if b.instance
                     and precedence.instance_key(b.instance).lower() == wanted), None)
    return max(bindings, key=lambda b: b.q if b.q is not None else -1.0, default=None)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False
