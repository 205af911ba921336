"""The event state compositor (RFC 3903): PUBLISH in, publications stored,
the presentity's document recomposed, and its watchers notified when the
document changed.

How publications are keyed and superseded: a publication belongs to a
source, the publishing device.  The source is the `+sip.instance` of the
PUBLISH's Contact (RFC 5626) when it has one, else its Contact address,
else the transport address the PUBLISH came from.  A new publication
(PUBLISH without SIP-If-Match) replaces every live publication of the same
source for that presentity.  So a device that lost track of its entity-tag
(it re-published before the 200 arrived, or got 412 and started afresh)
never leaves stale duplicates in the aggregate; the publications of other
devices are untouched.

Limits (each a setting): a published document carries at most
max_publication_elements top-level elements (413 beyond).  A presentity
keeps at most max_publications publications from PUBLISH: a new one
evicts the one refreshed least recently, whose device learns it with a
412 at its next refresh and publishes afresh (RFC 3903 4.1); a device
that stopped refreshing (rebooted, left) goes first, and the newest state
of a presentity is never refused.  Publications derived from
registrations and XMPP are not counted: nobody can be told no for them.
The aggregate has at most max_document_bytes: a PUBLISH that would make it
larger gets 413 and changes nothing; a change that cannot be refused (a
registration, XMPP presence, an expiry) leaves out the publications that
do not fit, last in the order first.
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import Callable

from . import rfc6665
from .clock import Clock
from .config import Settings
from .messages import Context, Notify, Outcome, reply
from .packages import EventPackage, composed, enabled, publishable
from .precedence import address_key, contact_key, instance_key
from .records import DocumentKey, Recomposed, StoredPublication
from .sip import BadRequest, SipRequest, is_token, parse_name_addr, parse_uri
from .store import Documents, StoreUnavailable, warn_outage
from .store.documents import Decide, OnExpiry

log = logging.getLogger("pa.compositor")

TIMER_BATCH = 200


def new_etag() -> str:
    """An entity-tag (RFC 3903): the milliseconds now, fixed width, then 72
    random bits.  Growing, new tags land at the end of pa_publication's
    etag index instead of on a random page of it, so a PUBLISH costs the
    same with a million stored publications as with a thousand; the random
    part keeps them unguessable."""
    return "%011x%s" % (int(time.time() * 1000), secrets.token_urlsafe(9))


class Compositor:
    """The one owner of presentities' documents: PUBLISH, registrations,
    XMPP presence, expiry and the native import all change publications
    through it, and its rule decides who is told: a change that altered a
    watched document fans out (`fan_out`: the notifier's in Kamailio, a
    task for Kamailio in a process that cannot send SIP)."""

    def __init__(self, settings: Settings, documents: Documents, clock: Clock,
                 fan_out: Callable[[DocumentKey], list[Notify]]):
        self.settings = settings
        self.documents = documents
        self.clock = clock
        self.fan_out = fan_out
        self.publishable = publishable(enabled(settings))

    def composer(self, presentity: str, pkg: EventPackage, refuse: bool = False):
        """How the store composes `presentity`'s document of `pkg` from its
        live publications (see the package's documents.compose)."""
        def compose(stored: list[StoredPublication], previous: bytes | None = None) -> bytes:
            return pkg.documents.compose(presentity, stored, self.settings, refuse, previous)
        return compose

    def composer_of(self, key: DocumentKey):
        """composer() for a stored key (the native import's)."""
        return self.composer(key.presentity, composed()[key.event])

    def _told(self, key: DocumentKey, outcome: Recomposed) -> list[Notify]:
        """The one rule: a change that altered a watched document is told."""
        return self.fan_out(key) if outcome.changed and outcome.watched else []

    # -- PUBLISH (RFC 3903) ---------------------------------------------------

    def publish(self, req: SipRequest, ctx: Context, domain: str) -> Outcome:
        packages = self.publishable
        event = rfc6665.served_event(req, packages)
        if event is None:
            return reply(489, ("Allow-Events", ", ".join(packages)))
        pkg = packages[event.package]
        presentity_uri = parse_uri(req.uri)
        if not presentity_uri.user:
            return reply(404, reason="Not Found (No User In Request-URI)")
        presentity = presentity_uri.aor
        if len(presentity) > 255:
            raise BadRequest("Request-URI Too Long")
        refusal = self._refusal(ctx.publisher, presentity)
        if refusal:
            refused = reply(403)
            refused.detail = refusal
            refused.presentity = presentity
            return refused
        expires = rfc6665.granted_expires(req, self.settings,
                                          self.settings.max_publish_expiration)
        if isinstance(expires, Outcome):
            return expires

        if_match = req.header("sip-if-match")
        parts = None
        if req.body:
            parsed = self._parse(req, pkg)
            if isinstance(parsed, Outcome):
                return parsed
            parts = parsed
        elif if_match is None:
            raise BadRequest("Initial PUBLISH Without Body")

        key = DocumentKey(presentity, domain, pkg.name)
        try:
            return self._change(req, ctx, key, pkg, parts, if_match, expires)
        except pkg.documents.TooLarge:
            refused = reply(413, reason=pkg.documents.too_large)
            refused.detail = ("the document would exceed max_document_bytes"
                              f" ({self.settings.max_document_bytes})")
            refused.presentity = presentity
            return refused

    def _change(self, req: SipRequest, ctx: Context, key: DocumentKey, pkg: EventPackage,
                parts: bytes | None, if_match: str | None, expires: int) -> Outcome:
        presentity = key.presentity
        publisher = _publisher(req, ctx)
        now = self.clock.now()
        compose = self.composer(presentity, pkg, refuse=True)
        etag = new_etag()
        evicted = 0
        if if_match is None:
            if expires == 0:
                return reply(200, ("Expires", "0"))
            recomposed, evicted = self.documents.add(
                key, etag, _source(req, ctx), publisher, _media_type(req), parts,
                now + expires, now, compose, self.settings.max_publications)
            action = "publish"
        else:
            if_match = if_match.strip()
            if len(if_match) > 64 or not is_token(if_match):
                return reply(412)
            if expires == 0:
                recomposed = self.documents.remove(key, if_match, now,
                                                self.composer(presentity, pkg))
                action = "remove"
            elif parts is None:
                known = self.documents.refresh(key, if_match, etag, now + expires, now)
                recomposed = Recomposed(False, False) if known else None
                action = "refresh"
            else:
                recomposed = self.documents.modify(key, if_match, etag, _media_type(req), parts,
                                                now + expires, now, compose)
                action = "modify"
            if recomposed is None:
                return reply(412)

        outcome = reply(200, ("Expires", str(expires))) if expires == 0 else \
            reply(200, ("SIP-ETag", etag), ("Expires", str(expires)))
        outcome.detail = f"{action}, expires {expires}" + \
            (", changed" if recomposed.changed else "") + \
            (f", evicted {evicted} (max_publications)" if evicted else "")
        outcome.presentity, outcome.watcher = presentity, publisher
        outcome.notifies.extend(self._told(key, recomposed))
        return outcome

    def _refusal(self, publisher: str, presentity: str) -> str:
        """Why this PUBLISH may not go on ("" when it may): with
        authorization on, only the presentity itself publishes its state;
        the routing script tells us who authenticated."""
        if self.settings.auth == "none":
            return ""
        if not publisher:
            log.warning("PUBLISH for %s refused: no authenticated publisher identity"
                        " (set $avp(pa_publisher) after authenticating)", presentity)
            return "no authenticated publisher"
        try:
            identity = parse_uri(publisher).aor
        except BadRequest:
            identity = publisher
        if identity != presentity:
            return f"publisher is {identity}"
        return ""

    def _parse(self, req: SipRequest, pkg: EventPackage) -> bytes | Outcome:
        if _media_type(req) not in pkg.publish_types:
            return reply(415, ("Accept", ", ".join(pkg.publish_types)))
        try:
            return pkg.documents.parse(req.body, self.settings)
        except pkg.documents.InvalidDocument as e:
            return reply(e.code, reason=e.reason)

    # -- state from elsewhere: registrations, XMPP, the timer ------------------

    def reconcile(self, key: DocumentKey, origin: str, decide: Decide) -> list[Notify]:
        """Make the publications one origin keeps for a presentity (the
        registrar's bindings, the gateway's XMPP resources) what `decide`
        says; what does not fit max_document_bytes is left out, not
        refused.  Returns the NOTIFYs of the change."""
        pkg = composed()[key.event]
        outcome = self.documents.reconcile(key, origin, decide, self.clock.now(),
                                           self.composer(key.presentity, pkg))
        if outcome.changed:
            log.info("%s publications of %s changed", origin, key.presentity)
        return self._told(key, outcome)

    def expire_publications(self, on_expiry: OnExpiry) -> list[Notify]:
        """Handle expired publications (`on_expiry`: see
        store.documents.OnExpiry) and notify the watchers of every
        presentity whose document changed."""
        notifies: list[Notify] = []
        now = self.clock.now()
        try:
            for key in self.documents.with_expired_publications(now, TIMER_BATCH):
                pkg = composed().get(key.event)
                if pkg is None:
                    continue    # a package this code no longer serves
                outcome = self.documents.expire(key, now, self.composer(key.presentity, pkg),
                                                on_expiry)
                if outcome.changed:
                    log.info("publication of %s expired", key.presentity)
                notifies += self._told(key, outcome)
        except StoreUnavailable as e:
            warn_outage(log, "publication timer", e)
        return notifies


def _media_type(req: SipRequest) -> str:
    return (req.header("content-type") or "").partition(";")[0].strip().lower()


def _publisher(req: SipRequest, ctx: Context) -> str:
    """Who published, as user@host: the identity the routing
    authenticated, else (auth none) the From address, unverified."""
    if ctx.publisher:
        try:
            return parse_uri(ctx.publisher).aor[:255]
        except BadRequest:
            return ctx.publisher[:255]
    value = req.header("from")
    if value is None:
        raise BadRequest("Missing From")
    address = parse_uri(parse_name_addr(value).uri).aor
    if len(address) > 255:
        raise BadRequest("From URI Too Long")
    return address


def _source(req: SipRequest, ctx: Context) -> str:
    contacts = req.header_list("contact")
    if contacts:
        contact = parse_name_addr(contacts[0])
        instance = contact.params.get("+sip.instance")
        if instance:
            return instance_key(instance)
        return contact_key(contact.uri)
    return address_key(ctx.source)
