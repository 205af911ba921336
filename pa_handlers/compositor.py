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

from . import pidf
from . import precedence
from .precedence import address_key, contact_key, instance_key
from .config import Settings
from .messages import Context, Notify, Outcome, reply
from .notifier import PRESENCE, Notifier, granted_expires, served_event
from .sip import BadRequest, SipRequest, is_token, parse_name_addr, parse_uri
from .store import Store, StoreUnavailable, warn_outage

log = logging.getLogger("pa.compositor")

ACCEPT = ("Accept", ", ".join(pidf.PUBLISH_TYPES))
TIMER_BATCH = 200


def new_etag() -> str:
    return secrets.token_urlsafe(12)


class Compositor:
    def __init__(self, notifier: Notifier):
        self.notifier = notifier
        self.settings: Settings = notifier.settings
        self.store: Store = notifier.store
        self.now = notifier.now

    def publish(self, req: SipRequest, ctx: Context, domain: str) -> Outcome:
        # Watcher information is the notifier's own state: nobody publishes it.
        event = served_event(req, (PRESENCE,))
        if event is None:
            return reply(489, ("Allow-Events", PRESENCE))
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
        expires = granted_expires(req, self.settings, self.settings.max_publish_expiration)
        if isinstance(expires, Outcome):
            return expires

        if_match = req.header("sip-if-match")
        parts = None
        if req.body:
            parsed = self._parse(req)
            if isinstance(parsed, Outcome):
                return parsed
            parts = parsed
        elif if_match is None:
            raise BadRequest("Initial PUBLISH Without Body")

        key = (presentity, domain, event.package)
        now = self.now()
        try:
            return self._change(req, ctx, key, now, parts, if_match, expires)
        except pidf.DocumentTooLarge:
            refused = reply(413, reason="Presence Document Too Large")
            refused.detail = ("the document would exceed max_document_bytes"
                              f" ({self.settings.max_document_bytes})")
            refused.presentity = presentity
            return refused

    def _change(self, req: SipRequest, ctx: Context, key: tuple[str, str, str], now: int,
                parts: pidf.Parts | None, if_match: str | None, expires: int) -> Outcome:
        presentity = key[0]
        publisher = _publisher(req, ctx)
        compose = composer(presentity, self.settings, refuse=True)
        etag = new_etag()
        evicted = 0
        if if_match is None:
            if expires == 0:
                return reply(200, ("Expires", "0"))
            changed, watched, evicted = self.store.add_publication(
                key, etag, _source(req, ctx), publisher, _media_type(req),
                parts.dumps(), now + expires, now, compose, self.settings.max_publications)
            action = "publish"
        else:
            if_match = if_match.strip()
            if len(if_match) > 64 or not is_token(if_match):
                return reply(412)
            if expires == 0:
                known, changed, watched = self.store.remove_publication(
                    key, if_match, now, composer(presentity, self.settings))
                action = "remove"
            elif parts is None:
                known = self.store.refresh_publication(key, if_match, etag, now + expires, now)
                changed = watched = False
                action = "refresh"
            else:
                known, changed, watched = self.store.modify_publication(
                    key, if_match, etag, _media_type(req), parts.dumps(),
                    now + expires, now, compose)
                action = "modify"
            if not known:
                return reply(412)

        outcome = reply(200, ("Expires", str(expires))) if expires == 0 else \
            reply(200, ("SIP-ETag", etag), ("Expires", str(expires)))
        outcome.detail = f"{action}, expires {expires}" + (", changed" if changed else "") + \
            (f", evicted {evicted} (max_publications)" if evicted else "")
        outcome.presentity, outcome.watcher = presentity, publisher
        if changed and watched:
            outcome.notifies.extend(self.notifier.fan_out(key))
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

    def _parse(self, req: SipRequest) -> pidf.Parts | Outcome:
        if _media_type(req) not in pidf.PUBLISH_TYPES:
            return reply(415, ACCEPT)
        try:
            return pidf.parse_publication(req.body, self.settings.default_priority,
                                          self.settings.max_publication_elements)
        except pidf.InvalidDocument as e:
            return reply(e.code, reason=e.reason)

    # -- timer ------------------------------------------------------------

    def expire_publications(self, on_expiry) -> list[Notify]:
        """Handle expired publications (`on_expiry`: see
        Store.expire_publications) and notify the watchers of every
        presentity whose document changed."""
        notifies: list[Notify] = []
        now = self.now()
        try:
            for key in self.store.presentities_with_expired_publications(now, TIMER_BATCH):
                changed, watched = self.store.expire_publications(
                    key, now, composer(key[0], self.settings), on_expiry)
                if changed:
                    log.info("publication of %s expired", key[0])
                if changed and watched:
                    notifies.extend(self.notifier.fan_out(key))
        except StoreUnavailable as e:
            warn_outage(log, "publication timer", e)
        return notifies


def composer(presentity: str, settings: Settings, refuse: bool = False):
    """The presentity's document from its stored publications, at most
    max_document_bytes.  Over it, `refuse` raises pidf.DocumentTooLarge
    (the store rolls the change back); otherwise the publications that do
    not fit are left out, last first, and the log says so."""
    limit = settings.max_document_bytes

    def compose(stored: list[tuple[str, str, bytes]]) -> bytes:
        # (origin, source, parts) as stored, oldest first.
        publications = precedence.arrange(stored)
        if refuse:
            document = pidf.compose(presentity, publications)
            if len(document) > limit:
                raise pidf.DocumentTooLarge(presentity)
            return document
        document, left_out = pidf.compose_within(presentity, publications, limit)
        if left_out:
            log.warning("document of %s over max_document_bytes (%d): %d of %d publications"
                        " left out", presentity, limit, left_out, len(publications))
        return document
    return compose


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
