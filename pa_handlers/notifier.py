"""The notifier (RFC 6665 4.2): SUBSCRIBE in, reply and NOTIFYs out, for
every event package of the registry (packages.py): packages whose state is
a presentity's document (presence, RFC 3856) and watcher-information
packages (RFC 3857), whose state is the notifier's own list of watchers.
Also the answers to our NOTIFYs, the subscription timers, and telling
watchers when their authorization changes.

Each subscription has at most one NOTIFY in flight, across processes and
nodes (the store keeps it with the subscription): a change while one is in
flight marks the subscription dirty, and the answer, or the NOTIFY's
deadline, sends the newest state.  So a watcher always ends with the
newest state, a burst of changes costs a slow watcher one NOTIFY (RFC 3856
6.4), and a watcher that never answers costs one transaction, not one per
change.  Only an answer to the NOTIFY in flight acts: any other (a late or
forged one) changes nothing.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Callable

from . import cache, rfc6665, rlmi, winfo
from .authorization import Authorizer
from .clock import Clock
from .config import Settings
from .messages import Context, Notify, Outcome, reply
from .packages import PACKAGES, EventPackage, allow_events, enabled, package, watcher_info_for
from .records import (ACTIVE, PENDING, TERMINATED, DialogResult, DocumentKey, Notifying,
                      Subscription)
from .sip import BadRequest, NameAddr, SipRequest, check_call_id, check_tag, choose_media_type, \
    parse_accept, parse_cseq, parse_uri
from .resource_lists import RL_TYPE, parsed_service_key
from .rls import ResourceListServer, is_adhoc, is_list
from .store import Decisions, Lists, Notifications, StoreUnavailable, Subscriptions, warn_outage
from .subscription import build_notify, subscription_state

log = logging.getLogger("pa.notifier")

TIMER_BATCH = 200
TIMER_MAX_BATCHES = 10


class Notifier:
    def __init__(self, settings: Settings, subscriptions: Subscriptions,
                 notifications: Notifications, authorizer: Authorizer, clock: Clock,
                 lists: Lists, decisions: Decisions):
        self.settings = settings
        self.subscriptions = subscriptions
        self.notifications = notifications
        self.authorizer = authorizer
        self.clock = clock
        self.winfo_limits = winfo.Limits.of(settings)
        # The packages the event_packages setting enables.
        self.served = enabled(settings)
        # The process's cache of parsed documents (pidf, presrules).
        cache.DOCUMENTS.resize(settings.cache_bytes)
        # List subscriptions (RFC 4662): their NOTIFYs are built there.
        self.rls = ResourceListServer(settings, lists, subscriptions, decisions, authorizer,
                                      clock, self.deadline)

    def deadline(self) -> int:
        """When a NOTIFY sent now counts as unanswered."""
        return self.clock.now() + self.settings.notify_timeout

    # -- SUBSCRIBE ------------------------------------------------------

    def subscribe(self, req: SipRequest, ctx: Context, domain: str) -> Outcome:
        event = rfc6665.served_event(req, self.served)
        if event is None:
            return reply(489, allow_events(self.served))
        call_id = check_call_id(req.header("call-id"))
        cseq, _ = parse_cseq(req.header("cseq"))
        from_ = rfc6665.name_addr(req, "from")
        to = rfc6665.name_addr(req, "to")
        if not from_.tag:
            raise BadRequest("Missing From Tag")
        check_tag(from_.tag)
        pkg = self.served[event.package]
        expires = rfc6665.granted_expires(req, self.settings,
                                          self.settings.max_subscription_expiration,
                                          pkg.default_expires)
        if isinstance(expires, Outcome):
            return expires
        if to.tag:
            return self._in_dialog(req, ctx, pkg, event.id,
                                   (call_id, check_tag(to.tag), from_.tag), cseq, expires)

        def as_list() -> Outcome | None:
            """The SUBSCRIBE as one to a list; None when its URI is none."""
            return self.rls.initial(req, ctx, domain, pkg.name, event.id, call_id, cseq,
                                    from_, to, expires)
        if is_adhoc(req):
            return as_list()
        return self._initial(req, ctx, domain, pkg, event.id, call_id, cseq, from_, to,
                             expires, as_list)

    def _initial(self, req, ctx, domain, pkg: EventPackage, event_id: str, call_id, cseq,
                 from_: NameAddr, to: NameAddr, expires: int,
                 as_list: Callable[[], Outcome | None]) -> Outcome:
        """A new subscription to a presentity, unless its URI is a list's.
        The common case, a presentity, is not asked about: the INSERT
        itself stores nothing for a list's URI, and only then, or when the
        SUBSCRIBE would be refused as one to a presentity, is it served as
        one to a list (`as_list`)."""
        def refused(outcome: Outcome) -> Outcome:
            return as_list() or outcome
        presentity_uri = parse_uri(req.uri)
        if not presentity_uri.user:
            return reply(404, reason="Not Found (No User In Request-URI)")
        content_type = choose_media_type(req, pkg.formats)
        if content_type is None:
            return refused(reply(406))
        remote_target = rfc6665.remote_target(req, required=True)
        route_set = rfc6665.route_set(req)
        presentity = rfc6665.fits(presentity_uri.aor, 255, "Request-URI")
        watcher = rfc6665.fits(parse_uri(from_.uri).aor, 255, "From URI")
        rfc6665.fits(to.text, 1024, "To")
        rfc6665.fits(from_.text, 1024, "From")
        authorization = self.authorizer.authorize(pkg, domain, presentity, watcher)
        if authorization.status == TERMINATED:
            return refused(_refused(reply(403), f"{pkg.name}, refused: {authorization.reason}",
                                    presentity, watcher))
        now = self.clock.now()
        sub = Subscription(
            presence_domain=domain, event=pkg.name, event_id=rfc6665.check_event_id(event_id),
            presentity=presentity, watcher=watcher,
            watcher_display=from_.display[:self.settings.max_display_name],
            call_id=call_id, local_tag=ctx.local_tag, remote_tag=from_.tag,
            local_uri=to.text, remote_uri=from_.text, remote_target=remote_target,
            route_set=route_set, local_contact=ctx.local_contact, socket=ctx.socket,
            received=ctx.source, remote_cseq=cseq, local_cseq=1,
            content_type=pkg.sent_as(content_type), status=authorization.status,
            reason=authorization.reason, permissions=authorization.permissions,
            expires_at=now + expires)
        outcome = self._ok(ctx, expires)
        if expires == 0:
            # A fetch: one NOTIFY with the current state, nothing stored.
            state = subscription_state(TERMINATED, 0, "timeout")
        else:
            state = subscription_state(sub.status, expires)
        winfo_pkg = watcher_info_for(pkg.name)
        winfo_name = winfo_pkg.name if winfo_pkg else None
        with_document = pkg.documents is not None
        if expires:
            added = self.subscriptions.add(sub, now, self.deadline(), self._limits(),
                                           with_document, winfo_name,
                                           parsed_service_key(presentity_uri),
                                           with_document and pkg.documents.versioned)
            if added is None:
                return refused(self._too_many(pkg.name, presentity, watcher))
            document, watched = added
        elif (listed := as_list()) is not None:
            return listed   # a fetch stores nothing to ask: ask first
        elif with_document:
            document, watched = self.subscriptions.document_and_watched(sub.key, winfo_name)
        else:
            document, watched = None, False
        outcome.notifies.append(self._notify(sub, state, document))
        if watched and expires:
            outcome.notifies += self.winfo_changed(
                sub.key, [winfo.entry(sub, winfo.SUBSCRIBE, now)], known_watched=True)
        outcome.detail = f"{pkg.name}, {sub.status}, expires {expires}"
        outcome.presentity, outcome.watcher = presentity, watcher
        return outcome

    def _limits(self) -> tuple[int, int]:
        return (self.settings.max_subscriptions_per_watcher,
                self.settings.max_subscriptions_per_presentity)

    def _too_many(self, package_name: str, presentity: str, watcher: str) -> Outcome:
        """A new subscription beyond max_subscriptions_per_watcher or
        _per_presentity.  403, not 503: the limit holds until subscriptions
        end, so a client told to retry later (or to try another node, RFC
        3263, which shares the same database) would only come back to the
        same answer."""
        return _refused(reply(403, reason="Forbidden (Too Many Subscriptions)"),
                        f"{package_name}, refused: too many subscriptions (limits: "
                        f"{self.settings.max_subscriptions_per_watcher} per watcher, "
                        f"{self.settings.max_subscriptions_per_presentity} per presentity)",
                        presentity, watcher)

    def _in_dialog(self, req, ctx, pkg: EventPackage, event_id: str, dialog, cseq,
                   expires: int) -> Outcome:
        if req.body and (req.header("content-type") or "").partition(";")[0].strip().lower() \
                == RL_TYPE:
            # RFC 5367 5.1: a list is given once, in the initial SUBSCRIBE.
            return reply(415)
        if expires == 0:
            # The final NOTIFY of an unsubscription goes out at once.
            done = self.subscriptions.remove(dialog, pkg.name, event_id, cseq)
            state = subscription_state(TERMINATED, 0, "timeout")
        else:
            content_type = None
            if req.has("accept") and not _accepts_lists(req):
                content_type = choose_media_type(req, pkg.formats)
                if content_type is None:
                    return reply(406)
                content_type = pkg.sent_as(content_type)
            # With a NOTIFY in flight, the refresh's NOTIFY follows its
            # answer (the subscription is marked dirty).
            done = self.subscriptions.refresh(
                dialog, pkg.name, event_id, cseq, self.clock.now() + expires,
                rfc6665.remote_target(req, required=False), content_type, self.deadline())
            state = subscription_state(done.subscription.status, expires) \
                if done.subscription else ""
        if done.result is DialogResult.UNKNOWN:
            return reply(481)
        if done.result is DialogResult.STALE:
            # RFC 3261 12.2.2: a CSeq lower than the last one is an error.
            return reply(500, reason="Server Internal Error (CSeq Out Of Order)")
        sub = done.subscription
        outcome = self._ok(ctx, expires)
        listed = is_list(sub)
        if listed:
            outcome.reply = dataclasses.replace(
                outcome.reply, headers=outcome.reply.headers + (("Require", rlmi.EVENTLIST),))
            if expires:
                # RFC 4662 5.2: full state after every SUBSCRIBE; with a
                # NOTIFY in flight, the one after its answer.
                self.rls.lists.want_full(sub.id)
        if done.send_now:
            outcome.notifies.append(self._notify(sub, state, done.document))
            if expires == 0:
                outcome.notifies += self.winfo_changed(
                    sub.key, [winfo.entry(sub, winfo.TIMEOUT, self.clock.now(), TERMINATED)])
        outcome.detail = (f"{sub.event}, refresh, expires {expires}" if expires
                          else f"{sub.event}, unsubscribe")
        if not done.send_now:
            outcome.detail += ", NOTIFY after the one in flight"
        outcome.presentity, outcome.watcher = sub.presentity, sub.watcher
        return outcome

    def _ok(self, ctx: Context, expires: int) -> Outcome:
        return reply(200, ("Expires", str(expires)), ("Contact", f"<{ctx.local_contact}>"))

    # -- NOTIFY bodies --------------------------------------------------------

    def _notify(self, sub: Subscription, state: str, document: bytes | None,
                bodies: dict | None = None, expired: bool = False,
                partial: bool = False) -> Notify:
        """The NOTIFY with the subscription's whole state, CSeq local_cseq:
        a document package's document as this watcher may see it (each
        view rendered once per `bodies`), a watcher-information package's
        whole watcher list (but for the final NOTIFY of an `expired` one,
        which RFC 6665 4.1.2.3 lets go without state).  `partial`: a NOTIFY
        that tells a change, which a package with partial state may send as
        what changed since the watcher's last acknowledged document."""
        if is_list(sub):
            return self.rls.notify(sub, state)
        if sub.status != ACTIVE:
            return build_notify(sub, sub.local_cseq, state)
        pkg = package(sub.event)
        if pkg.watcher_info_of:
            if expired:
                return build_notify(sub, sub.local_cseq, state)
            return self._winfo_full(sub, pkg, state)
        view = pkg.documents.view(sub)
        bodies = {} if bodies is None else bodies
        if view not in bodies:
            bodies[view] = pkg.documents.render(document, sub, partial)
        return build_notify(sub, sub.local_cseq, state, sub.content_type, bodies[view])

    def _winfo_full(self, sub: Subscription, pkg: EventPackage, state: str) -> Notify:
        """A watcher-info NOTIFY with the presentity's whole watcher list;
        its version is the NOTIFY's CSeq minus one."""
        now = self.clock.now()
        watchers = self.subscriptions.of(sub.presentity, pkg.watcher_info_of, now,
                                         sub.presence_domain)
        entries = [winfo.entry(w, winfo.SUBSCRIBE, now) for w in watchers]
        body = winfo.document(sub.presentity, sub.local_cseq - 1, True, entries,
                              self.winfo_limits, package=pkg.watcher_info_of)
        return build_notify(sub, sub.local_cseq, state, winfo.WATCHERINFO, body)

    def fan_out(self, key: DocumentKey) -> list[Notify]:
        """NOTIFYs with the presentity's new state to its active watchers
        (those with a NOTIFY in flight get the newest state after its
        answer)."""
        try:
            subs, document = self.notifications.fan_out(key, self.clock.now(), self.deadline())
            notifies = self._newest_all([Notifying(sub, document) for sub in subs])
            # Lists with the presentity among their members.
            return notifies + self.rls.member_changed(*key)
        except StoreUnavailable as e:
            log.warning("watchers of %s not notified: %s", key.presentity, e)
            return []

    def winfo_changed(self, key: DocumentKey, entries: list[winfo.WatcherEntry],
                      known_watched: bool = False) -> list[Notify]:
        """Partial watcher-info NOTIFYs to those who watch the watcher list
        of `key` (those with a NOTIFY in flight get the whole list after
        its answer)."""
        pkg = watcher_info_for(key.event)
        if pkg is None:
            return []
        winfo_key = DocumentKey(key.presentity, key.presence_domain, pkg.name)
        try:
            if not known_watched and not self.subscriptions.watched(
                    [(key.presentity, key.presence_domain)], pkg.name):
                return []
            subs, _ = self.notifications.fan_out(winfo_key, self.clock.now(), self.deadline())
        except StoreUnavailable as e:
            log.warning("watcher-info of %s not sent: %s", key.presentity, e)
            return []
        now = self.clock.now()
        return [build_notify(sub, sub.local_cseq, subscription_state(ACTIVE, sub.expires_at - now),
                             winfo.WATCHERINFO,
                             winfo.document(key.presentity, sub.local_cseq - 1, False, entries,
                                            self.winfo_limits, package=key.event))
                for sub in subs]

    def _winfo_for_ended(self, subs: list[Subscription], event: str) -> list[Notify]:
        """Watcher-info NOTIFYs about subscriptions that ended: whose lists
        are watched is asked once per watcher-information package."""
        notifies: list[Notify] = []
        now = self.clock.now()
        groups: dict[str, dict[tuple[str, str], list[winfo.WatcherEntry]]] = {}
        for sub in subs:
            if watcher_info_for(sub.event) is not None:
                groups.setdefault(sub.event, {}).setdefault(
                    (sub.presentity, sub.presence_domain), []).append(
                    winfo.entry(sub, event, now, TERMINATED))
        for name, by_presentity in groups.items():
            try:
                watched = self.subscriptions.watched(list(by_presentity),
                                                     watcher_info_for(name).name)
            except StoreUnavailable as e:
                log.warning("watcher-info not sent: %s", e)
                continue
            for presentity, domain in watched:
                notifies += self.winfo_changed(DocumentKey(presentity, domain, name),
                                               by_presentity[(presentity, domain)],
                                               known_watched=True)
        return notifies

    # -- authorization changes ------------------------------------------------

    def reauthorize(self, presentity: str) -> list[Notify]:
        """Evaluate again every watcher of the presentity (its rules or
        decisions changed) and tell those whose standing changed:
        pending -> active, -> rejected, active -> deactivated (RFC 6665
        allows no way back to pending), or a new view of the document."""
        notifies: list[Notify] = []
        now = self.clock.now()
        changes: dict[DocumentKey, list[winfo.WatcherEntry]] = {}
        for pkg in PACKAGES.values():
            if pkg.watcher_info_of:
                continue    # the owner's: never changes
            for sub in self.subscriptions.of(presentity, pkg.name, now):
                notifies += self._reauthorized(sub, pkg, now, changes)
        for key, entries in changes.items():
            notifies += self.winfo_changed(key, entries)
        # Each member of a list is authorized on its own: lists that hold
        # the presentity see the new decision too.
        return notifies + self.rls.member_changed(presentity)

    def _reauthorized(self, sub: Subscription, pkg: EventPackage, now: int,
                      changes: dict) -> list[Notify]:
        new = self.authorizer.authorize(pkg, sub.presence_domain, sub.presentity, sub.watcher)
        if (new.status, new.permissions) == (sub.status, sub.permissions) or \
                (new.status == PENDING and sub.status == PENDING):
            return []
        if new.status == TERMINATED or (new.status == PENDING and sub.status == ACTIVE):
            reason = (new.reason or "rejected") if new.status == TERMINATED else "deactivated"
            ended = self.subscriptions.end(sub)
            if ended is None:
                return []  # changed meanwhile; whoever changed it told the watcher
            event = winfo.REJECTED if reason == "rejected" else winfo.DEACTIVATED
            changes.setdefault(sub.key, []).append(winfo.entry(ended, event, now, TERMINATED))
            log.info("watcher %s of %s: %s", sub.watcher, sub.presentity, reason)
            return [build_notify(ended, ended.local_cseq, subscription_state(TERMINATED, 0, reason))]
        moved = self.subscriptions.reauthorize(sub, new.status, new.permissions, self.deadline())
        if moved is None:
            return []
        (updated, document), send_now = moved
        if sub.status == PENDING:
            changes.setdefault(sub.key, []).append(winfo.entry(updated, winfo.APPROVED, now))
            log.info("watcher %s of %s: approved", sub.watcher, sub.presentity)
        if not send_now:   # the answer to the NOTIFY in flight tells the watcher
            return []
        return [self._notify(updated, subscription_state(ACTIVE, updated.expires_at - now),
                             document)]

    def remove_watcher(self, presentity: str, domain: str, watcher: str) -> list[Notify]:
        """An operator removes a watcher: its subscriptions end
        (deactivated: it may subscribe again and be judged anew)."""
        ended = []
        for pkg in PACKAGES.values():
            if pkg.watcher_info_of:
                continue    # the presentity's own
            for sub in self.subscriptions.of(presentity, pkg.name, self.clock.now(), domain):
                if sub.watcher == watcher:
                    gone = self.subscriptions.end(sub)
                    if gone is not None:
                        ended.append(gone)
        return self._end_all(ended, "deactivated")

    def end_call(self, call_id: str) -> list[Notify]:
        """An operator ends a subscription."""
        return self._end_all(self.subscriptions.end_call(call_id), "deactivated")

    def _end_all(self, ended: list[Subscription], reason: str) -> list[Notify]:
        state = subscription_state(TERMINATED, 0, reason)
        notifies = [build_notify(sub, sub.local_cseq, state) for sub in ended]
        for sub in ended:
            log.info("subscription of %s to %s ended by the operator (call-id=%s)",
                     sub.watcher, sub.presentity, sub.call_id)
        return notifies + self._winfo_for_ended(ended, winfo.DEACTIVATED)

    # -- answers to our NOTIFYs -------------------------------------------

    def notify_answered(self, dialog: tuple[str, str, str], cseq: int,
                        code: int) -> list[Notify]:
        """A final answer to our NOTIFY with CSeq `cseq`.  481 and 404 (and
        408) mean the watcher is gone (RFC 6665 4.2.2); any other ends the
        wait, and a dirty subscription gets its newest state."""
        if code in (404, 481) or (code == 408 and not self.settings.ignore_408_on_notify):
            return self._watcher_gone(self.notifications.drop_answered(dialog, cseq),
                                      f"NOTIFY answered {code}")
        changed = self.notifications.answered(dialog, cseq, code if code >= 300 else None,
                                              self.deadline())
        return self._newest_all([changed]) if changed else []

    def notifies_answered(self, answers: list[tuple[tuple[str, str, str], int]]) -> list[Notify]:
        """Successful answers (dialog, CSeq) collected over a moment, ended
        in one round trip; the subscriptions that changed meanwhile get
        their newest state."""
        if len(answers) == 1:
            return self.notify_answered(*answers[0], 200)   # one statement, not two
        return self._newest_all(self.notifications.settle(answers, self.deadline()))

    def notify_unsendable(self, dialog: tuple[str, str, str], cseq: int) -> list[Notify]:
        """Our NOTIFY with CSeq `cseq` could not even be sent (its target
        resolves nowhere): every later one would fail alike, so the
        subscription ends now."""
        return self._watcher_gone(self.notifications.drop_answered(dialog, cseq),
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
                claimed, gone, again = self.notifications.claim_unanswered(
                    self.clock.now(), TIMER_BATCH, end, self.deadline())
                count += claimed
                for sub in gone:
                    notifies += self._watcher_gone(sub, "NOTIFY unanswered")
                # A list's lost NOTIFY may have been partial: full state.
                for sub, _ in again:
                    if is_list(sub):
                        self.rls.lists.want_full(sub.id)
                notifies += self._newest_all(again)
                if claimed < TIMER_BATCH:
                    break
        except StoreUnavailable as e:
            warn_outage(log, "unanswered NOTIFYs", e)
        return notifies, count

    def _newest_all(self, changed: list[Notifying]) -> list[Notify]:
        """The NOTIFYs with the newest whole state of subscriptions (for
        watcher information the whole list: partial updates would leave
        out what was coalesced), each view rendered once."""
        now = self.clock.now()
        bodies: dict = {}
        return [self._notify(sub, subscription_state(sub.status, sub.expires_at - now),
                             document, bodies, partial=True) for sub, document in changed]

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
                batch = self.subscriptions.claim_expired(self.clock.now(), TIMER_BATCH)
                bodies: dict = {}
                for sub, document in batch:
                    notifies.append(self._notify(sub, state, document, bodies, expired=True))
                    log.info("subscription of %s to %s expired (call-id=%s)",
                             sub.watcher, sub.presentity, sub.call_id)
                notifies += self._winfo_for_ended([sub for sub, _ in batch], winfo.TIMEOUT)
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


def _accepts_lists(req: SipRequest) -> bool:
    """Whether a refresh's Accept is a list subscriber's (RFC 4662 4.3:
    multipart/related): then the members' type stays as negotiated."""
    return any(r.type == rlmi.MULTIPART for r in parse_accept(req.header_list("accept")))


def _refused(outcome: Outcome, detail: str, presentity: str, watcher: str) -> Outcome:
    outcome.detail = detail
    outcome.presentity, outcome.watcher = presentity, watcher
    return outcome
