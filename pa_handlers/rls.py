"""The resource list server (RFC 4662): one SUBSCRIBE for a whole list of
resources, one NOTIFY stream carrying their states as RLMI plus the
members' documents (rlmi.py).

Where lists come from:
    stored    the Request-URI is a service URI of some user's rls-services
              document (RFC 4826 4, resource_lists.py); only its owner may
              subscribe (RFC 4662 4.4 leaves it to policy; so does
              Kamailio's rls) unless auth is none
    ad-hoc    the SUBSCRIBE carries the list (RFC 5367: Require:
              recipient-list-subscribe, a resource-lists body, maybe
              deflated), what Linphone sends

A list subscription is a subscription like any other (pa_subscription: the
dialog, its expiry, its one NOTIFY in flight) whose content_type is
multipart/related, plus its members (store.lists).  Each member is a
virtual subscription of the list's subscriber: the member's own
authorization of that subscriber decides (pending: no document;
rejected: terminated), exactly as if it had subscribed itself.

NOTIFYs: the first and the first after every SUBSCRIBE (refreshes
included), after a change of the list's members, and after a NOTIFY that
went unanswered carry full state; the others only the members whose state
changed since they were last told.  A member's change marks its list
subscriptions pending; they are sent at once, unless a NOTIFY is in flight
or the last went out less than rls_notify_interval ago, then by the timer
(every second) as soon as both allow.  The RLMI version is the NOTIFY's
CSeq minus one: 0 first, +1 each (RFC 4662 5.2).
"""

from __future__ import annotations

import dataclasses
import logging
import zlib
from typing import Callable

from . import resource_lists, rlmi
from .authorization import Authorizer
from .clock import Clock
from .config import Settings
from .messages import Context, Notify, Outcome, reply
from .packages import EventPackage, package, publishable
from .records import (ACTIVE, PENDING, TERMINATED, BackEndPolicy, DocumentKey, MemberRow,
                      Subscription)
from .resource_lists import InvalidDocument, ListError, Member
from .sip import BadRequest, NameAddr, SipRequest, choose_media_type, parse_accept, parse_uri
from .store import Decisions, Lists, Subscriptions
from .store.lists import BACKEND
from .subscription import build_notify, subscription_state
from . import rfc6665

log = logging.getLogger("pa.rls")

RECIPIENT_LIST_SUBSCRIBE = "recipient-list-subscribe"
BATCH = 200
# An ad-hoc list is its subscriber's own: no other watcher shares its
# Request-URI's count (max_subscriptions_per_presentity).
_UNLIMITED = 2**31


def is_list(sub: Subscription) -> bool:
    return sub.content_type == rlmi.MULTIPART


def is_adhoc(req: SipRequest) -> bool:
    """RFC 5367: the SUBSCRIBE carries its list in its body."""
    return RECIPIENT_LIST_SUBSCRIBE in _tokens(req, "require")


def _tokens(req: SipRequest, name: str) -> set[str]:
    return {t.strip().lower() for t in req.header_list(name)}


def _admits(req: SipRequest, media: str) -> bool:
    if not req.has("accept"):
        return True
    kind = media.split("/")[0] + "/*"
    return any(r.q > 0 and r.type in (media, kind, "*/*")
               for r in parse_accept(req.header_list("accept")))


class ResourceListServer:
    def __init__(self, settings: Settings, lists: Lists, subscriptions: Subscriptions,
                 decisions: Decisions, authorizer: Authorizer, clock: Clock,
                 deadline: Callable[[], int]):
        self.settings = settings
        self.lists = lists
        self.subscriptions = subscriptions
        self.decisions = decisions
        self.authorizer = authorizer
        self.clock = clock
        self.deadline = deadline
        self.backend_policy = BackEndPolicy(self.is_backend,
                                            settings.max_backend_subscriptions_per_subscriber)

    def is_backend(self, presentity: str) -> bool:
        """Whether a member (user@host) is served by a back-end
        subscription: its domain is not one of local_domains."""
        user, at, host = presentity.rpartition("@")
        return bool(at) and not self.settings.is_local(host)

    # -- SUBSCRIBE to a list ------------------------------------------------------

    def initial(self, req: SipRequest, ctx: Context, domain: str, event: str, event_id: str,
                call_id: str, cseq: int, from_: NameAddr, to: NameAddr,
                expires: int) -> Outcome | None:
        """A SUBSCRIBE outside a dialog, if it is for a list (None: it is
        not, the notifier serves it)."""
        adhoc = is_adhoc(req)
        key = resource_lists.service_key(req.uri)
        owner = ""
        if not adhoc:
            owner = self.lists.service_owner(key) if key else None
            if owner is None:
                return None
        if rlmi.EVENTLIST not in _tokens(req, "supported"):
            # RFC 4662 4.1: a list cannot be served without the extension.
            refused = reply(421, ("Require", rlmi.EVENTLIST), reason="Extension Required")
            refused.detail = "list without Supported: eventlist"
            return refused
        pkg = publishable().get(event)
        if pkg is None:
            return reply(489, ("Allow-Events", ", ".join(publishable())))
        if not (_admits(req, rlmi.MULTIPART) and _admits(req, rlmi.RLMI)):
            return reply(406)
        member_type = pkg.sent_as(choose_media_type(req, pkg.formats) or pkg.formats[0])
        watcher = rfc6665.fits(parse_uri(from_.uri).aor, 255, "From URI")
        list_uri = f"sip:{key}" if key else req.uri
        if adhoc:
            members = self._adhoc(req)
        else:
            members = self._stored(owner, key, watcher, pkg)
        if isinstance(members, Outcome):
            members.presentity, members.watcher = key or "", watcher
            return members
        now = self.clock.now()
        sub = Subscription(
            presence_domain=domain, event=pkg.name, event_id=rfc6665.check_event_id(event_id),
            presentity=rfc6665.fits(key or parse_uri(req.uri).aor, 255, "Request-URI"),
            watcher=watcher, watcher_display=from_.display[:self.settings.max_display_name],
            call_id=call_id, local_tag=ctx.local_tag, remote_tag=from_.tag,
            local_uri=rfc6665.fits(to.text, 1024, "To"),
            remote_uri=rfc6665.fits(from_.text, 1024, "From"),
            remote_target=rfc6665.remote_target(req, required=True),
            route_set=rfc6665.route_set(req), local_contact=ctx.local_contact,
            socket=ctx.socket, received=ctx.source, remote_cseq=cseq, local_cseq=1,
            content_type=rlmi.MULTIPART, status=ACTIVE, reason="", permissions=0,
            expires_at=now + expires)
        outcome = reply(200, ("Expires", str(expires)), ("Contact", f"<{ctx.local_contact}>"),
                        ("Require", rlmi.EVENTLIST))
        if expires:
            limits = (self.settings.max_subscriptions_per_watcher,
                      _UNLIMITED if adhoc else self.settings.max_subscriptions_per_presentity)
            if not self.lists.add(sub, list_uri, owner, member_type, members, now,
                                  self.deadline(), limits, self.settings.rls_notify_interval,
                                  self.backend_policy):
                refused = reply(403, reason="Forbidden (Too Many Subscriptions)")
                refused.detail = f"{pkg.name} list, refused: too many subscriptions"
                return refused
            rows = [_row(m, self.is_backend(m.presentity)) for m in members]
            state = subscription_state(ACTIVE, expires)
        else:
            rows = [_row(m, self.is_backend(m.presentity)) for m in members]
            state = subscription_state(TERMINATED, 0, "timeout")
        outcome.notifies.append(self._list_notify(sub, state, list_uri, member_type, rows,
                                                  full=True, record=bool(expires)))
        outcome.detail = (f"{pkg.name} list{' (ad-hoc)' if adhoc else ''} of {len(members)},"
                          f" expires {expires}")
        outcome.presentity, outcome.watcher = sub.presentity, watcher
        return outcome

    def _stored(self, owner: str, key: str, watcher: str,
                pkg: EventPackage) -> list[Member] | Outcome:
        if self.settings.auth != "none" and _lower_host(watcher) != owner:
            refused = reply(403, reason="Forbidden (Not The List's Owner)")
            refused.detail = f"list of {owner}, refused to {watcher}"
            return refused
        resolved = self.resolve(owner, key)
        if isinstance(resolved, str):
            refused = reply(502 if resolved != "missing" else 404,
                            reason=("Not Found" if resolved == "missing"
                                    else f"Bad Gateway (List {resolved.title()})"))
            refused.detail = f"list {key} of {owner}: {resolved}"
            return refused
        members, packages = resolved
        if packages is not None and pkg.name not in packages:
            return reply(489, ("Allow-Events", ", ".join(sorted(packages))))
        return members

    def resolve(self, owner: str, key: str) -> tuple[list[Member], set | None] | str:
        """The members of an owner's service `key` and its packages, or why
        not: 'missing', 'loop', 'depth', 'members'."""
        s = self.settings
        doc = self.decisions.xcap_document(owner, resource_lists.RLS_SERVICES)
        if doc is None or not doc.body:
            return "missing"
        try:
            services = resource_lists.parse_rls_services(doc.body, s.rls_max_document_bytes)
        except InvalidDocument:
            return "missing"
        service = services.get(key)
        if service is None:
            return "missing"

        def fetch():
            lists = self.decisions.xcap_document(owner, resource_lists.RESOURCE_LISTS)
            return lists.body if lists else None
        try:
            members, skipped = resource_lists.resolve_service(
                service, owner, fetch, s.rls_max_document_bytes, s.rls_max_depth,
                s.rls_max_members)
        except ListError as e:
            log.warning("list %s of %s not served: %s", key, owner, e.detail)
            return e.kind
        if skipped:
            log.info("list %s of %s: %d references not resolved, skipped (%s)", key, owner,
                     len(skipped), ", ".join(x[:80] for x in skipped[:3]))
        return members, resource_lists.packages_of(service)

    def _adhoc(self, req: SipRequest) -> list[Member] | Outcome:
        """The members of a request-contained list (RFC 5367)."""
        media = (req.header("content-type") or "").partition(";")[0].strip().lower()
        if not req.body:
            raise BadRequest("Recipient List Missing")
        if media != resource_lists.RL_TYPE:
            return reply(415, ("Accept", resource_lists.RL_TYPE))
        disposition = (req.header("content-disposition") or "recipient-list")
        if disposition.partition(";")[0].strip().lower() != "recipient-list":
            return reply(415, reason="Unsupported Media Type (Content-Disposition)")
        limit = self.settings.rls_max_document_bytes
        body = req.body
        encoding = (req.header("content-encoding") or "identity").strip().lower()
        if encoding in ("deflate", "gzip"):
            body = _inflate(body, limit, gzip=encoding == "gzip")
            if body is None:
                return reply(400, reason="Bad Request (Bad Content-Encoding)")
            if len(body) > limit:
                return reply(413, reason="Request Entity Too Large (Recipient List)")
        elif encoding != "identity":
            return reply(415, ("Accept-Encoding", "deflate, gzip"))
        try:
            return resource_lists.adhoc_members(body, limit, self.settings.rls_max_depth,
                                                self.settings.rls_max_members)
        except InvalidDocument as e:
            if e.too_large:
                return reply(413, reason="Request Entity Too Large (Recipient List)")
            return reply(400, reason=f"Bad Request ({e.reason})")
        except ListError:
            return reply(413, reason=f"Request Entity Too Large (More Than"
                                     f" {self.settings.rls_max_members} Resources)")

    # -- NOTIFYs ------------------------------------------------------------------

    def notify(self, sub: Subscription, state: str, full: bool = False) -> Notify:
        """The NOTIFY with CSeq local_cseq of a list subscription: full
        state when due, else the members that changed; a final one
        without body."""
        if state.startswith(TERMINATED):
            return build_notify(sub, sub.local_cseq, state)
        head, members, docs = self.lists.of(sub.id, full)
        if head is None:
            return build_notify(sub, sub.local_cseq, state)
        return self._list_notify(sub, state, head.list_uri, head.member_type, members,
                                 full=full or head.full_due, record=True, docs=docs)

    def _list_notify(self, sub: Subscription, state: str, list_uri: str, member_type: str,
                     members: list[MemberRow], full: bool, record: bool,
                     docs: dict[str, bytes] | None = None) -> Notify:
        """`docs`: the local members' documents by presentity (None: read
        them here)."""
        pkg = package(sub.event)
        if docs is None:
            keys = [DocumentKey(m.presentity, sub.presence_domain, pkg.name)
                    for m in members if m.source != BACKEND]
            docs = {k.presentity: body for k, body in self.lists.documents(keys).items()} \
                if keys else {}
        told, resources, deferred = [], [], []
        carried = 0
        for member in members:
            resource = self._resource(sub, pkg, member, member_type, docs)
            digest = rlmi.digest(resource)
            if not (full or digest != member.sent_digest):
                continue
            size = len(resource.body.encode()) if resource.state == ACTIVE else 0
            if size and carried and carried + size > self.settings.rls_max_notify_bytes:
                # rls_max_notify_bytes: listed without instance (state not
                # yet known, RFC 4662 4.5), its document in the next NOTIFY.
                resources.append(rlmi.Resource(member.uri, member.name, ""))
                deferred.append(member.uri)
                continue
            carried += size
            resources.append(resource)
            told.append((member.uri, resource.state, resource.reason, digest))
        content_type, body = rlmi.body(list_uri, sub.local_cseq - 1, full, resources)
        if record:
            self.lists.told(sub.id, told, full,
                            self.clock.now() + self.settings.rls_notify_interval, deferred)
        return build_notify(sub, sub.local_cseq, state, content_type, body)

    def _resource(self, sub: Subscription, pkg: EventPackage, member: MemberRow,
                  member_type: str, docs: dict) -> rlmi.Resource:
        if member.source == BACKEND:
            # Fed by an external source; '' state: nothing known yet.
            return rlmi.Resource(member.uri, member.name, member.state, member.reason,
                                 member.content_type,
                                 (member.body or b"").decode("utf-8", "replace"))
        auth = self.authorizer.authorize(pkg, sub.presence_domain, member.presentity,
                                         sub.watcher)
        if auth.status == TERMINATED:
            return rlmi.Resource(member.uri, member.name, TERMINATED, auth.reason or "rejected")
        if auth.status == PENDING:
            return rlmi.Resource(member.uri, member.name, PENDING)
        view = dataclasses.replace(sub, presentity=member.presentity, content_type=member_type,
                                   permissions=auth.permissions, status=ACTIVE)
        document = docs.get(member.presentity)
        return rlmi.Resource(member.uri, member.name, ACTIVE, "", member_type,
                             pkg.documents.render(document, view))

    # -- changes ------------------------------------------------------------------

    def member_changed(self, presentity: str, domain: str | None = None,
                       event: str | None = None) -> list[Notify]:
        """A presentity's document or authorization changed: the list
        subscriptions with it among their members are told (now, or when
        the rate limit and the NOTIFY in flight allow)."""
        ids = self.lists.with_member(presentity, domain, event)
        return self._send(self.lists.claim_pending(
            self.clock.now(), self.deadline(), self.settings.rls_notify_interval, BATCH, ids)) \
            if ids else []

    def changed(self, ids: list[int]) -> list[Notify]:
        """List subscriptions whose back-end members changed are told (now,
        or when the rate limit and the NOTIFY in flight allow)."""
        return self._send(self.lists.claim_pending(
            self.clock.now(), self.deadline(), self.settings.rls_notify_interval, BATCH, ids)) \
            if ids else []

    def flush(self) -> list[Notify]:
        """The timer: pending list NOTIFYs whose time has come."""
        return self._send(self.lists.claim_pending(
            self.clock.now(), self.deadline(), self.settings.rls_notify_interval, BATCH))

    def _send(self, subs: list[Subscription]) -> list[Notify]:
        now = self.clock.now()
        return [self.notify(sub, subscription_state(ACTIVE, sub.expires_at - now))
                for sub in subs]

    def lists_changed(self, owner: str) -> list[Notify]:
        """An owner's resource-lists or rls-services document changed: its
        live list subscriptions get their new members at once (full
        state), or end (noresource) when their list is gone."""
        notifies: list[Notify] = []
        changed: list[int] = []
        for sub, list_uri in self.lists.of_owner(owner):
            resolved = self.resolve(owner, sub.presentity)
            if resolved == "missing" or (not isinstance(resolved, str) and resolved[1] is not None
                                         and sub.event not in resolved[1]):
                ended = self.subscriptions.end(sub)
                if ended is not None:
                    log.info("list %s of %s is gone: subscription of %s ended", list_uri,
                             owner, sub.watcher)
                    notifies.append(build_notify(ended, ended.local_cseq,
                                                 subscription_state(TERMINATED, 0, "noresource")))
                continue
            if isinstance(resolved, str):
                continue    # a loop or too long now: keep serving the members it had
            if self.lists.replace_members(sub.id, resolved[0], self.backend_policy):
                changed.append(sub.id)
        if changed:
            # Membership changes are told at once, not after the rate limit.
            notifies += self._send(self.lists.claim_pending(
                self.clock.now(), self.deadline(), self.settings.rls_notify_interval, BATCH,
                changed, rate_limited=False))
        return notifies


def _lower_host(aor: str) -> str:
    user, at, host = aor.rpartition("@")
    return f"{user}@{host.lower()}" if at else aor


def _row(member: Member, backend: bool = False) -> MemberRow:
    # A back-end member's state is not known yet: listed without instance.
    return MemberRow(member.uri, member.presentity, member.name,
                     BACKEND if backend else "local", "", "", "", None, "", "", "")


def _inflate(body: bytes, limit: int, gzip: bool) -> bytes | None:
    """A deflated body, decompressed to at most limit + 1 bytes (more says
    it is too large without inflating a bomb); None when it is not
    deflate data."""
    attempts = (31,) if gzip else (15, -15)     # zlib-wrapped as RFC 9110 says, or raw
    for wbits in attempts:
        try:
            d = zlib.decompressobj(wbits)
            out = d.decompress(body, limit + 1)
            return out
        except zlib.error:
            continue
    return None
