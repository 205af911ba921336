"""The notifier (RFC 6665 4.2, RFC 3856): SUBSCRIBE in, reply and NOTIFYs
out; the NOTIFY answers; the subscription timers."""

from __future__ import annotations

import logging
from typing import Callable

from . import pidf
from .config import Settings
from .messages import Context, Notify, Outcome, reply
from .sip import (BadRequest, EventHeader, NameAddr, SipRequest, check_call_id, check_tag,
                  choose_media_type, is_token, parse_cseq, parse_delta_seconds, parse_event,
                  parse_name_addr, parse_uri)
from .store import DialogResult, Store, StoreUnavailable
from .subscription import (ACTIVE, PENDING, TERMINATED, Subscription, build_notify,
                           subscription_state)

log = logging.getLogger("pa.notifier")

SERVED_EVENTS = ("presence",)
ALLOW_EVENTS = ("Allow-Events", ", ".join(SERVED_EVENTS))
TIMER_BATCH = 200
TIMER_MAX_BATCHES = 10


class Notifier:
    def __init__(self, settings: Settings, store: Store, clock: Callable[[], float]):
        self.settings = settings
        self.store = store
        self.clock = clock

    def now(self) -> int:
        return int(self.clock())

    # -- SUBSCRIBE ------------------------------------------------------

    def subscribe(self, req: SipRequest, ctx: Context, domain: str) -> Outcome:
        event = served_event(req)
        if event is None:
            return reply(489, ALLOW_EVENTS)
        call_id = check_call_id(req.header("call-id"))
        cseq, _ = parse_cseq(req.header("cseq"))
        from_ = _name_addr(req, "from")
        to = _name_addr(req, "to")
        if not from_.tag:
            raise BadRequest("Missing From Tag")
        check_tag(from_.tag)
        expires = granted_expires(req, self.settings, self.settings.max_subscription_expiration)
        if isinstance(expires, Outcome):
            return expires
        if to.tag:
            return self._in_dialog(req, ctx, event, (call_id, check_tag(to.tag), from_.tag),
                                   cseq, expires)
        return self._initial(req, ctx, domain, event, call_id, cseq, from_, to, expires)

    def _initial(self, req, ctx, domain, event, call_id, cseq, from_: NameAddr,
                 to: NameAddr, expires: int) -> Outcome:
        presentity_uri = parse_uri(req.uri)
        if not presentity_uri.user:
            return reply(404, reason="Not Found (No User In Request-URI)")
        content_type = choose_media_type(req, pidf.PRESENCE_FORMATS)
        if content_type is None:
            return reply(406)
        content_type = pidf.sent_as(content_type)
        remote_target = _contact(req, required=True)
        route_set = _route_set(req)
        presentity = _fits(presentity_uri.aor, 255, "Request-URI")
        watcher = _fits(parse_uri(from_.uri).aor, 255, "From URI")
        _fits(to.text, 1024, "To")
        _fits(from_.text, 1024, "From")
        status, reason = self._authorize(domain, event.package, presentity, watcher)
        if status == TERMINATED:
            return reply(403)
        now = self.now()
        sub = Subscription(
            presence_domain=domain, event=event.package, event_id=check_event_id(event.id),
            presentity=presentity, watcher=watcher, watcher_display=from_.display[:128],
            call_id=call_id, local_tag=ctx.local_tag, remote_tag=from_.tag,
            local_uri=to.text, remote_uri=from_.text, remote_target=remote_target,
            route_set=route_set, local_contact=ctx.local_contact, socket=ctx.socket,
            received=ctx.source, remote_cseq=cseq, local_cseq=1,
            content_type=content_type, status=status, reason=reason, version=0,
            expires_at=now + expires)
        if expires == 0:
            # A fetch: one NOTIFY with the current state, nothing stored.
            state = subscription_state(TERMINATED, 0, "timeout")
        else:
            self.store.add_subscription(sub, now)
            state = subscription_state(status, expires)
        # Read after the subscription exists, so that no concurrent change
        # of the document can fall between this read and its fan-out.
        document = self.store.document(domain, sub.event, presentity) if status == ACTIVE else None
        outcome = self._ok(ctx, expires)
        outcome.notifies.append(self._notify(sub, sub.local_cseq, state, document))
        log.info("SUBSCRIBE %s watcher=%s %s expires=%d call-id=%s",
                 presentity, watcher, status, expires, call_id)
        return outcome

    def _in_dialog(self, req, ctx, event, dialog, cseq, expires: int) -> Outcome:
        if expires == 0:
            result, sub, document = self.store.remove_subscription(dialog, event.package,
                                                                   event.id, cseq)
            state = subscription_state(TERMINATED, 0, "timeout")
        else:
            content_type = None
            if req.has("accept"):
                content_type = choose_media_type(req, pidf.PRESENCE_FORMATS)
                if content_type is None:
                    return reply(406)
                content_type = pidf.sent_as(content_type)
            remote_target = _contact(req, required=False)
            result, sub, document = self.store.refresh_subscription(
                dialog, event.package, event.id, cseq, self.now() + expires,
                remote_target, content_type, self.now())
            state = subscription_state(sub.status, expires) if sub else ""
        if result is DialogResult.UNKNOWN:
            return reply(481)
        if result is DialogResult.STALE:
            # RFC 3261 12.2.2: a CSeq lower than the last one is an error.
            return reply(500, reason="Server Internal Error (CSeq Out Of Order)")
        outcome = self._ok(ctx, expires)
        outcome.notifies.append(self._notify(sub, sub.local_cseq, state,
                                             document if sub.status == ACTIVE else None))
        log.info("SUBSCRIBE %s watcher=%s %s expires=%d call-id=%s",
                 sub.presentity, sub.watcher, "refresh" if expires else "unsubscribe",
                 expires, sub.call_id)
        return outcome

    def _authorize(self, domain: str, event: str, presentity: str, watcher: str) -> tuple[str, str]:
        if self.settings.auth == "none" or watcher == presentity:
            return ACTIVE, ""
        decided = self.store.watcher_status(domain, event, presentity, watcher)
        if decided is None:
            return PENDING, ""
        return decided

    def _ok(self, ctx: Context, expires: int) -> Outcome:
        return reply(200, ("Expires", str(expires)), ("Contact", f"<{ctx.local_contact}>"))

    def _notify(self, sub: Subscription, cseq: int, state: str,
                document: bytes | None) -> Notify:
        if sub.status != ACTIVE:
            return build_notify(sub, cseq, state)
        body = pidf.render(document, sub.presentity, sub.content_type)
        return build_notify(sub, cseq, state, sub.content_type, body)

    def fan_out(self, key: tuple[str, str, str]) -> list[Notify]:
        """NOTIFYs with the presentity's new document to its active
        watchers; each format is rendered once, not once per watcher."""
        try:
            subs, document = self.store.watchers_to_notify(key, self.now())
        except StoreUnavailable as e:
            log.warning("watchers of %s not notified: %s", key[0], e)
            return []
        now = self.now()
        bodies: dict[str, str] = {}
        notifies = []
        for sub in subs:
            body = bodies.get(sub.content_type)
            if body is None:
                body = bodies[sub.content_type] = pidf.render(document, sub.presentity,
                                                              sub.content_type)
            state = subscription_state(ACTIVE, sub.expires_at - now)
            notifies.append(build_notify(sub, sub.local_cseq, state, sub.content_type, body))
        return notifies

    # -- answers to our NOTIFYs -------------------------------------------

    def notify_answered(self, dialog: tuple[str, str, str], cseq: int, code: int) -> None:
        if code < 200:
            return
        if code in (404, 481) or (code == 408 and not self.settings.ignore_408_on_notify):
            sub = self.store.drop_subscription(dialog, code)
            if sub is not None:
                log.info("subscription of %s to %s ended: NOTIFY answered %d (call-id=%s)",
                         sub.watcher, sub.presentity, code, sub.call_id)
            return
        self.store.notify_answered(dialog, cseq, code, self.now())

    # -- timers ---------------------------------------------------------

    def expire_subscriptions(self) -> list[Notify]:
        """Final NOTIFYs of the subscriptions that ran out, in bounded
        batches so that a burst of expiries cannot exhaust memory."""
        notifies = []
        state = subscription_state(TERMINATED, 0, "timeout")
        try:
            for _ in range(TIMER_MAX_BATCHES):
                batch = self.store.claim_expired_subscriptions(self.now(), TIMER_BATCH)
                for sub, document in batch:
                    notifies.append(self._notify(sub, sub.local_cseq, state, document))
                    log.info("subscription of %s to %s expired (call-id=%s)",
                             sub.watcher, sub.presentity, sub.call_id)
                if len(batch) < TIMER_BATCH:
                    break
        except StoreUnavailable as e:
            # Nothing is lost: unclaimed rows wait for the next sweep.
            log.warning("subscription timer paused: %s", e)
        return notifies

    def drop_unanswered(self) -> None:
        """End subscriptions whose NOTIFY got no answer in notify_timeout
        (Timer F at the watcher's side of RFC 6665 4.2.2)."""
        if self.settings.ignore_408_on_notify:
            return
        before = self.now() - self.settings.notify_timeout
        try:
            for _ in range(TIMER_MAX_BATCHES):
                batch = self.store.claim_unanswered_subscriptions(before, TIMER_BATCH)
                for sub in batch:
                    log.info("subscription of %s to %s ended: NOTIFY unanswered for %ds"
                             " (call-id=%s)", sub.watcher, sub.presentity,
                             self.settings.notify_timeout, sub.call_id)
                if len(batch) < TIMER_BATCH:
                    break
        except StoreUnavailable as e:
            log.warning("unanswered-NOTIFY timer paused: %s", e)


def served_event(req: SipRequest) -> EventHeader | None:
    """The request's one Event header (RFC 6665 8.2.1), if we serve it."""
    events = req.headers.get("event", [])
    event = parse_event(events[0]) if len(events) == 1 else None
    return event if event is not None and event.package in SERVED_EVENTS else None


def granted_expires(req: SipRequest, settings: Settings, maximum: int) -> int | Outcome:
    """The Expires we grant: the default when absent, clamped to `maximum`,
    and 423 for a non-zero value below min_expires."""
    value = req.header("expires")
    if value is None:
        return min(settings.default_expires, maximum)
    expires = parse_delta_seconds(value, "Expires")
    if 0 < expires < settings.min_expires:
        return reply(423, ("Min-Expires", str(settings.min_expires)))
    return min(expires, maximum)


def check_event_id(value: str) -> str:
    if value and (len(value) > 128 or not is_token(value)):
        raise BadRequest("Bad Event id")
    return value


def _fits(value: str, limit: int, what: str) -> str:
    if len(value) > limit:
        raise BadRequest(f"{what} Too Long")
    return value


def _name_addr(req: SipRequest, name: str) -> NameAddr:
    value = req.header(name)
    if value is None:
        raise BadRequest(f"Missing {name.title()}")
    return parse_name_addr(value)


def _contact(req: SipRequest, required: bool) -> str | None:
    contacts = req.header_list("contact")
    if not contacts:
        if required:
            raise BadRequest("Missing Contact")
        return None
    if len(contacts) != 1:
        raise BadRequest("More Than One Contact")
    uri = parse_name_addr(contacts[0]).uri
    parse_uri(uri)
    return uri


def _route_set(req: SipRequest) -> str:
    routes = req.header_list("record-route")
    for route in routes:
        parse_uri(parse_name_addr(route).uri)
    joined = ", ".join(routes)
    if len(joined) > 4096:
        raise BadRequest("Record-Route Too Long")
    return joined
