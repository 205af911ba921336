"""The notifier (RFC 6665 4.2): SUBSCRIBE in, reply and NOTIFYs out, for
the presence package (RFC 3856) and its watcher information (RFC 3857);
the answers to our NOTIFYs; the subscription timers; and telling watchers
when their authorization changes."""

from __future__ import annotations

import logging
from typing import Callable

from . import cache, pidf, winfo
from .authorization import Authorizer
from .config import Settings
from .messages import Context, Notify, Outcome, reply
from .sip import (BadRequest, EventHeader, NameAddr, SipRequest, check_call_id, check_tag,
                  choose_media_type, is_token, parse_cseq, parse_delta_seconds, parse_event,
                  parse_name_addr, parse_uri)
from .store import DialogResult, Store, StoreUnavailable, warn_outage
from .subscription import (ACTIVE, PENDING, TERMINATED, Subscription, build_notify,
                           subscription_state)

log = logging.getLogger("pa.notifier")

PRESENCE = "presence"
WINFO = winfo.PACKAGE
SERVED_EVENTS = (PRESENCE, WINFO)
ALLOW_EVENTS = ("Allow-Events", ", ".join(SERVED_EVENTS))
FORMATS = {PRESENCE: pidf.PRESENCE_FORMATS, WINFO: (winfo.WATCHERINFO,)}
TIMER_BATCH = 200
TIMER_MAX_BATCHES = 10


class Notifier:
    def __init__(self, settings: Settings, store: Store, clock: Callable[[], float]):
        self.settings = settings
        self.store = store
        self.clock = clock
        self.authorizer = Authorizer(settings, store, clock)
        self.winfo_limits = winfo.Limits.of(settings)
        # The process's cache of parsed documents (pidf, presrules).
        cache.DOCUMENTS.resize(settings.cache_bytes)

    def now(self) -> int:
        return int(self.clock())

    def deadline(self) -> int:
        """When a NOTIFY sent now counts as unanswered."""
        return self.now() + self.settings.notify_timeout

    # -- SUBSCRIBE ------------------------------------------------------

    def subscribe(self, req: SipRequest, ctx: Context, domain: str) -> Outcome:
        event = served_event(req, SERVED_EVENTS)
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
        content_type = choose_media_type(req, FORMATS[event.package])
        if content_type is None:
            return reply(406)
        content_type = pidf.sent_as(content_type)
        remote_target = _contact(req, required=True)
        route_set = _route_set(req)
        presentity = _fits(presentity_uri.aor, 255, "Request-URI")
        watcher = _fits(parse_uri(from_.uri).aor, 255, "From URI")
        _fits(to.text, 1024, "To")
        _fits(from_.text, 1024, "From")
        if event.package == WINFO:
            authorization = self.authorizer.winfo(presentity, watcher)
        else:
            authorization = self.authorizer.presence(domain, presentity, watcher)
        if authorization.status == TERMINATED:
            refused = reply(403)
            refused.detail = f"{event.package}, refused: {authorization.reason}"
            refused.presentity, refused.watcher = presentity, watcher
            return refused
        now = self.now()
        sub = Subscription(
            presence_domain=domain, event=event.package, event_id=check_event_id(event.id),
            presentity=presentity, watcher=watcher, watcher_display=from_.display[:self.settings.max_display_name],
            call_id=call_id, local_tag=ctx.local_tag, remote_tag=from_.tag,
            local_uri=to.text, remote_uri=from_.text, remote_target=remote_target,
            route_set=route_set, local_contact=ctx.local_contact, socket=ctx.socket,
            received=ctx.source, remote_cseq=cseq, local_cseq=1,
            content_type=content_type, status=authorization.status,
            reason=authorization.reason, permissions=authorization.permissions,
            expires_at=now + expires)
        outcome = self._ok(ctx, expires)
        if expires == 0:
            # A fetch: one NOTIFY with the current state, nothing stored.
            state = subscription_state(TERMINATED, 0, "timeout")
        else:
            state = subscription_state(sub.status, expires)
        limits = (self.settings.max_subscriptions_per_watcher,
                  self.settings.max_subscriptions_per_presentity)
        if event.package == WINFO:
            if expires and self.store.add_subscription(sub, now, self.deadline(),
                                                       limits) is None:
                return self._too_many(event.package, presentity, watcher)
            outcome.notifies.append(self._winfo_full(sub, state))
        else:
            if expires:
                added = self.store.add_subscription(sub, now, self.deadline(), limits, WINFO)
                if added is None:
                    return self._too_many(event.package, presentity, watcher)
                document, watched = added
            else:
                document, watched = self.store.document_and_watchers(
                    (presentity, domain, PRESENCE), WINFO)
            outcome.notifies.append(self._notify(sub, sub.local_cseq, state, document))
            if watched and expires:
                outcome.notifies += self.winfo_changed(
                    domain, presentity, [winfo.entry(sub, winfo.SUBSCRIBE, now)],
                    known_watched=True)
        outcome.detail = f"{event.package}, {sub.status}, expires {expires}"
        outcome.presentity, outcome.watcher = presentity, watcher
        return outcome

    def _too_many(self, package: str, presentity: str, watcher: str) -> Outcome:
        """A new subscription beyond max_subscriptions_per_watcher or
        _per_presentity.  403, not 503: the limit holds until subscriptions
        end, so a client told to retry later (or to try another node, RFC
        3263, which shares the same database) would only come back to the
        same answer."""
        refused = reply(403, reason="Forbidden (Too Many Subscriptions)")
        refused.detail = (f"{package}, refused: too many subscriptions (limits: "
                          f"{self.settings.max_subscriptions_per_watcher} per watcher, "
                          f"{self.settings.max_subscriptions_per_presentity} per presentity)")
        refused.presentity, refused.watcher = presentity, watcher
        return refused

    def _in_dialog(self, req, ctx, event, dialog, cseq, expires: int) -> Outcome:
        notify = True   # the final NOTIFY of an unsubscription goes out at once
        if expires == 0:
            result, sub, document = self.store.remove_subscription(dialog, event.package,
                                                                   event.id, cseq)
            state = subscription_state(TERMINATED, 0, "timeout")
        else:
            content_type = None
            if req.has("accept"):
                content_type = choose_media_type(req, FORMATS[event.package])
                if content_type is None:
                    return reply(406)
                content_type = pidf.sent_as(content_type)
            remote_target = _contact(req, required=False)
            # With a NOTIFY in flight, the refresh's NOTIFY follows its
            # answer (the subscription is marked dirty).
            result, sub, document, notify = self.store.refresh_subscription(
                dialog, event.package, event.id, cseq, self.now() + expires,
                remote_target, content_type, self.deadline())
            state = subscription_state(sub.status, expires) if sub else ""
        if result is DialogResult.UNKNOWN:
            return reply(481)
        if result is DialogResult.STALE:
            # RFC 3261 12.2.2: a CSeq lower than the last one is an error.
            return reply(500, reason="Server Internal Error (CSeq Out Of Order)")
        outcome = self._ok(ctx, expires)
        if notify and sub.event == WINFO:
            outcome.notifies.append(self._winfo_full(sub, state))
        elif notify:
            outcome.notifies.append(self._notify(sub, sub.local_cseq, state, document))
            if expires == 0:
                outcome.notifies += self.winfo_changed(
                    sub.presence_domain, sub.presentity,
                    [winfo.entry(sub, winfo.TIMEOUT, self.now(), TERMINATED)])
        outcome.detail = (f"{sub.event}, refresh, expires {expires}" if expires
                          else f"{sub.event}, unsubscribe")
        if not notify:
            outcome.detail += ", NOTIFY after the one in flight"
        outcome.presentity, outcome.watcher = sub.presentity, sub.watcher
        return outcome

    def _ok(self, ctx: Context, expires: int) -> Outcome:
        return reply(200, ("Expires", str(expires)), ("Contact", f"<{ctx.local_contact}>"))

    # -- NOTIFY bodies --------------------------------------------------------

    def _notify(self, sub: Subscription, cseq: int, state: str,
                document: bytes | None) -> Notify:
        """A presence NOTIFY: the document as this watcher may see it."""
        if sub.status != ACTIVE:
            return build_notify(sub, cseq, state)
        body = pidf.render(document, sub.presentity, sub.content_type, sub.permissions)
        return build_notify(sub, cseq, state, sub.content_type, body)

    def _winfo_full(self, sub: Subscription, state: str) -> Notify:
        """A winfo NOTIFY with the presentity's whole watcher list."""
        if sub.status != ACTIVE:
            return build_notify(sub, sub.local_cseq, state)
        now = self.now()
        watchers = self.store.subscriptions_of(sub.presentity, PRESENCE, now,
                                               sub.presence_domain)
        entries = [winfo.entry(w, winfo.SUBSCRIBE, now) for w in watchers]
        body = winfo.document(sub.presentity, sub.local_cseq - 1, True, entries,
                              self.winfo_limits)
        return build_notify(sub, sub.local_cseq, state, winfo.WATCHERINFO, body)

    def fan_out(self, key: tuple[str, str, str]) -> list[Notify]:
        """NOTIFYs with the presentity's new document to its active
        watchers (those with a NOTIFY in flight get the newest state after
        its answer); each format and view is rendered once, not once per
        watcher."""
        try:
            subs, document = self.store.watchers_to_notify(key, self.now(), self.deadline())
        except StoreUnavailable as e:
            log.warning("watchers of %s not notified: %s", key[0], e)
            return []
        return self._newest_all([(sub, document) for sub in subs])

    def winfo_changed(self, domain: str, presentity: str, entries: list[winfo.WatcherEntry],
                      known_watched: bool = False) -> list[Notify]:
        """Partial watcher-info NOTIFYs to those who watch the presentity's
        watcher list (those with a NOTIFY in flight get the whole list
        after its answer)."""
        try:
            if not known_watched and not self.store.watched([(presentity, domain)], WINFO):
                return []
            subs, _ = self.store.watchers_to_notify((presentity, domain, WINFO), self.now(),
                                                    self.deadline())
        except StoreUnavailable as e:
            log.warning("watcher-info of %s not sent: %s", presentity, e)
            return []
        now = self.now()
        return [build_notify(sub, sub.local_cseq, subscription_state(ACTIVE, sub.expires_at - now),
                             winfo.WATCHERINFO,
                             winfo.document(presentity, sub.local_cseq - 1, False, entries,
                                            self.winfo_limits))
                for sub in subs]

    def _winfo_for_ended(self, subs: list[Subscription], event: str) -> list[Notify]:
        """Watcher-info NOTIFYs about presence subscriptions that ended."""
        notifies: list[Notify] = []
        now = self.now()
        groups: dict[tuple[str, str], list[winfo.WatcherEntry]] = {}
        for sub in subs:
            if sub.event == PRESENCE:
                groups.setdefault((sub.presentity, sub.presence_domain), []).append(
                    winfo.entry(sub, event, now, TERMINATED))
        if not groups:
            return notifies
        try:
            watched = self.store.watched(list(groups), WINFO)
        except StoreUnavailable as e:
            log.warning("watcher-info not sent: %s", e)
            return notifies
        for presentity, domain in watched:
            notifies += self.winfo_changed(domain, presentity, groups[(presentity, domain)],
                                           known_watched=True)
        return notifies

    # -- authorization changes ------------------------------------------------

    def reauthorize(self, presentity: str) -> list[Notify]:
        """Evaluate again every watcher of the presentity (its rules or
        decisions changed) and tell those whose standing changed:
        pending -> active, -> rejected, active -> deactivated (RFC 6665
        allows no way back to pending), or a new view of the document."""
        notifies: list[Notify] = []
        now = self.now()
        changes: dict[str, list[winfo.WatcherEntry]] = {}
        for sub in self.store.subscriptions_of(presentity, PRESENCE, now):
            new = self.authorizer.presence(sub.presence_domain, presentity, sub.watcher)
            if (new.status, new.permissions) == (sub.status, sub.permissions) or \
                    (new.status == PENDING and sub.status == PENDING):
                continue
            if new.status == TERMINATED or (new.status == PENDING and sub.status == ACTIVE):
                reason = (new.reason or "rejected") if new.status == TERMINATED else "deactivated"
                ended = self.store.end_subscription(sub)
                if ended is None:
                    continue  # changed meanwhile; whoever changed it told the watcher
                notifies.append(build_notify(ended, ended.local_cseq,
                                             subscription_state(TERMINATED, 0, reason)))
                event = winfo.REJECTED if reason == "rejected" else winfo.DEACTIVATED
                changes.setdefault(sub.presence_domain, []).append(
                    winfo.entry(ended, event, now, TERMINATED))
                log.info("watcher %s of %s: %s", sub.watcher, presentity, reason)
                continue
            moved = self.store.reauthorize_subscription(sub, new.status, new.permissions,
                                                        self.deadline())
            if moved is None:
                continue
            updated, document, notify = moved
            if notify:   # else the answer to the NOTIFY in flight tells the watcher
                notifies.append(self._notify(updated, updated.local_cseq,
                                             subscription_state(ACTIVE, updated.expires_at - now),
                                             document))
            if sub.status == PENDING:
                changes.setdefault(sub.presence_domain, []).append(
                    winfo.entry(updated, winfo.APPROVED, now))
                log.info("watcher %s of %s: approved", sub.watcher, presentity)
        for domain, entries in changes.items():
            notifies += self.winfo_changed(domain, presentity, entries)
        return notifies

    def remove_watcher(self, presentity: str, domain: str, watcher: str) -> list[Notify]:
        """An operator removes a watcher: its subscriptions end
        (deactivated: it may subscribe again and be judged anew)."""
        ended = []
        for sub in self.store.subscriptions_of(presentity, PRESENCE, self.now(), domain):
            if sub.watcher == watcher:
                gone = self.store.end_subscription(sub)
                if gone is not None:
                    ended.append(gone)
        return self._end_all(ended, "deactivated")

    def end_call(self, call_id: str) -> list[Notify]:
        """An operator ends a subscription."""
        return self._end_all(self.store.end_subscriptions_of_call(call_id), "deactivated")

    def _end_all(self, ended: list[Subscription], reason: str) -> list[Notify]:
        state = subscription_state(TERMINATED, 0, reason)
        notifies = [build_notify(sub, sub.local_cseq, state) for sub in ended]
        for sub in ended:
            log.info("subscription of %s to %s ended by the operator (call-id=%s)",
                     sub.watcher, sub.presentity, sub.call_id)
        return notifies + self._winfo_for_ended(ended, winfo.DEACTIVATED)

    # -- answers to our NOTIFYs -------------------------------------------
    #
    # Each subscription has at most one NOTIFY in flight, across processes
    # and nodes (the store keeps it with the subscription): a change while
    # one is in flight marks the subscription dirty, and the answer, or the
    # NOTIFY's deadline, sends the newest state.  So a watcher always ends
    # with the newest state, a burst of changes costs a slow watcher one
    # NOTIFY (RFC 3856 6.4), and a watcher that never answers costs one
    # transaction, not one per change.  Only an answer to the NOTIFY in
    # flight acts: any other (a late or forged one) changes nothing.

    def notify_answered(self, dialog: tuple[str, str, str], cseq: int,
                        code: int) -> list[Notify]:
        """A final answer to our NOTIFY with CSeq `cseq`.  481 and 404 (and
        408) mean the watcher is gone (RFC 6665 4.2.2); any other ends the
        wait, and a dirty subscription gets its newest state."""
        if code in (404, 481) or (code == 408 and not self.settings.ignore_408_on_notify):
            return self._watcher_gone(self.store.drop_answered(dialog, cseq),
                                      f"NOTIFY answered {code}")
        changed = self.store.notify_answered(dialog, cseq, code if code >= 300 else None,
                                             self.deadline())
        return self._newest_all([changed]) if changed else []

    def notifies_answered(self, answers: list[tuple[tuple[str, str, str], int]]) -> list[Notify]:
        """Successful answers (dialog, CSeq) collected over a moment, ended
        in one round trip; the subscriptions that changed meanwhile get
        their newest state."""
        if len(answers) == 1:
            return self.notify_answered(*answers[0], 200)   # one statement, not two
        return self._newest_all(self.store.settle_answered(answers, self.deadline()))

    def notify_unsendable(self, dialog: tuple[str, str, str], cseq: int) -> list[Notify]:
        """Our NOTIFY with CSeq `cseq` could not even be sent (its target
        resolves nowhere): every later one would fail alike, so the
        subscription ends now."""
        return self._watcher_gone(self.store.drop_answered(dialog, cseq),
                                  "its NOTIFY has nowhere to go")

    def notify_unanswered(self) -> tuple[list[Notify], int]:
        """The NOTIFYs in flight past notify_timeout (Timer F).  The first
        of a subscription to go unanswered is sent again with the newest
        state, for its answer may have been lost with the node that sent
        it (a restart, a crash); when that one goes unanswered too, the
        subscription ends (RFC 6665 4.2.2).  With ignore_408_on_notify a
        subscription only stops waiting, and gets what changed meanwhile.
        Bounded batches, like the expiries.  Returns the NOTIFYs and how
        many went unanswered."""
        notifies: list[Notify] = []
        count = 0
        end = not self.settings.ignore_408_on_notify
        try:
            for _ in range(TIMER_MAX_BATCHES):
                claimed, gone, again = self.store.claim_unanswered(self.now(), TIMER_BATCH, end,
                                                                   self.deadline())
                count += claimed
                for sub in gone:
                    notifies += self._watcher_gone(sub, "NOTIFY unanswered")
                notifies += self._newest_all(again)
                if claimed < TIMER_BATCH:
                    break
        except StoreUnavailable as e:
            warn_outage(log, "unanswered NOTIFYs", e)
        return notifies, count

    def _newest_all(self, changed: list[tuple[Subscription, bytes | None]]) -> list[Notify]:
        """The NOTIFYs with the newest state of subscriptions whose changes
        waited for the answer to the previous one: presence the whole
        document (each view rendered once), watcher information the whole
        list (partial updates would leave out what was coalesced)."""
        now = self.now()
        bodies: dict[tuple, str] = {}
        notifies = []
        for sub, document in changed:
            state = subscription_state(sub.status, sub.expires_at - now)
            if sub.event == WINFO:
                notifies.append(self._winfo_full(sub, state))
            elif sub.status != ACTIVE:
                notifies.append(build_notify(sub, sub.local_cseq, state))
            else:
                view = (sub.presentity, sub.presence_domain, sub.content_type, sub.permissions)
                if view not in bodies:
                    bodies[view] = pidf.render(document, sub.presentity, sub.content_type,
                                               sub.permissions)
                notifies.append(build_notify(sub, sub.local_cseq, state, sub.content_type,
                                             bodies[view]))
        return notifies

    def _watcher_gone(self, sub: Subscription | None, why: str) -> list[Notify]:
        if sub is None:
            return []
        log.info("subscription of %s to %s ended: %s (call-id=%s)",
                 sub.watcher, sub.presentity, why, sub.call_id)
        return self._winfo_for_ended([sub], winfo.TIMEOUT)

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
                    if sub.event == WINFO:
                        notifies.append(build_notify(sub, sub.local_cseq, state))
                    else:
                        notifies.append(self._notify(sub, sub.local_cseq, state, document))
                    log.info("subscription of %s to %s expired (call-id=%s)",
                             sub.watcher, sub.presentity, sub.call_id)
                notifies += self._winfo_for_ended([s for s, _ in batch], winfo.TIMEOUT)
                if len(batch) < TIMER_BATCH:
                    break
        except StoreUnavailable as e:
            # Nothing is lost: unclaimed rows wait for the next sweep.
            warn_outage(log, "subscription timer", e)
        return notifies

    def refresh_rules(self) -> list[Notify]:
        """Fetch again stale pres-rules from an external XCAP server and
        re-evaluate the watchers of those that changed."""
        notifies: list[Notify] = []
        try:
            for presentity in self.authorizer.refresh_stale_rules():
                log.info("pres-rules of %s changed on the XCAP server", presentity)
                notifies += self.reauthorize(presentity)
        except StoreUnavailable as e:
            warn_outage(log, "pres-rules refresh", e)
        return notifies


def served_event(req: SipRequest, served: tuple[str, ...]) -> EventHeader | None:
    """The request's one Event header (RFC 6665 8.2.1), if we serve it."""
    events = req.headers.get("event", [])
    event = parse_event(events[0]) if len(events) == 1 else None
    return event if event is not None and event.package in served else None


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
    # Every NOTIFY echoes the id, and Kamailio's t_uac_send turns "!!" in
    # a header into its own address: no '!' (a token character) there.
    if value and (len(value) > 128 or not is_token(value) or "!" in value):
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
    if "!" in uri:
        # Behind a strict router the remote target becomes the last Route
        # of our NOTIFYs, where Kamailio replaces "!!" (see check_event_id).
        raise BadRequest("Bad Contact")
    return uri


def _route_set(req: SipRequest) -> str:
    return route_set_of(req.header_list("record-route"))


def route_set_of(routes: list[str]) -> str:
    """Record-Route values, in received order, as a subscription keeps them."""
    for route in routes:
        parse_uri(parse_name_addr(route).uri)
        if "!" in route:
            # Copied into the Route of our NOTIFYs (see check_event_id).
            raise BadRequest("Bad Record-Route")
    joined = ", ".join(routes)
    if len(joined) > 4096:
        raise BadRequest("Record-Route Too Long")
    return joined
