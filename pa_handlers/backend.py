"""Back-end subscriptions of the resource list server (RFC 4662 4.5, 7):
for a list member of a domain this server is not authoritative for
(setting local_domains), the server subscribes to the member upstream
with its own SIP SUBSCRIBE and feeds each NOTIFY into the member's state.

One back-end subscription per (resource, event, subscriber), shared by
every list of that subscriber and by every node (store.backend).  It is
sent with the subscriber's identity (From: the subscriber's AOR, our
Contact), so the remote presentity authorizes that user; its result goes
to that subscriber's lists only (RFC 4662 7.2).

Life of one (the timer drives it, every second):
    idle         a SUBSCRIBE is due (first, or a retry): a new dialog
    sent         answer awaited; none within backend_timeout: failed
    established  refreshed before its expiry; ended (Expires: 0) once no
                 list of the subscriber holds the member
A failure (an error answer, a timeout, 481, a NOTIFY saying terminated)
shows the member as terminated with the reason in RLMI and retries after a
backoff doubling from backend_retry_min to backend_retry_max (a
Retry-After or retry-after from upstream wins).

Kamailio's tm sends our requests without a callback (t_uac_send): the
answers arrive in the reply route (answered) and are matched to the
dialog by Call-ID, From tag and CSeq; a stray or late one changes nothing.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets

from .clock import Clock
from .config import Settings
from .messages import Outcome, reply
from .packages import package
from .records import ESTABLISHED, IDLE, BackEndSubscription
from .sip import (BadRequest, SipRequest, parse_cseq, parse_name_addr, parse_params,
                  parse_request, parse_uri)
from .store import BackEnd
from .subscription import route_target

log = logging.getLogger("pa.backend")

BATCH = 100
# Subscription-State reasons after which a new SUBSCRIBE may succeed at
# once (RFC 6665 4.2.2 / 4.1.3).
_AT_ONCE = ("deactivated", "timeout")
# Reasons that will not change soon: retried at the longest backoff.
_FINAL = ("rejected", "noresource", "invariant")


@dataclasses.dataclass(frozen=True)
class Request:
    """An out-of-dialog or in-dialog request ready for tm.t_uac_send."""
    method: str
    ruri: str
    nexthop: str
    socket: str
    headers: str
    body: str = ""


def failure_reason(code: int) -> str:
    """The RLMI reason (a Subscription-State reason, RFC 4662 5.3) of an
    error answer to a back-end SUBSCRIBE."""
    if code in (403, 603):
        return "rejected"
    if code in (404, 410, 484, 489, 604):
        return "noresource"
    if code == 408:
        return "timeout"
    return "probation"


def parse_response(data: bytes) -> tuple[int, SipRequest]:
    """A SIP response's status code and its headers (parsed as a request's)."""
    first, sep, rest = data.partition(b"\n")
    parts = first.decode("utf-8", "replace").split(" ")
    if len(parts) < 2 or parts[0] != "SIP/2.0" or not parts[1].isdigit():
        raise BadRequest("Bad Status Line")
    return int(parts[1]), parse_request(b"RESPONSE sip:response SIP/2.0\r\n" + rest)


class BackEndSubscriptions:
    def __init__(self, settings: Settings, backend: BackEnd, clock: Clock):
        self.settings = settings
        self.backend = backend
        self.clock = clock

    @property
    def enabled(self) -> bool:
        return bool(self.settings.local_domains)

    # -- the timer -------------------------------------------------------------------

    def due(self, sweep: bool = False) -> tuple[list[Request], list[int]]:
        """The SUBSCRIBEs whose time has come, and the list subscriptions
        whose back-end members changed (failures) to notify."""
        if not self.enabled:
            return [], []
        now = self.clock.now()
        if sweep:
            self.backend.unneeded_due()
        requests: list[Request] = []
        changed: list[int] = []
        for sub in self.backend.claim_due(now, now + self.settings.backend_timeout, BATCH):
            if not sub.needed:
                if sub.phase == ESTABLISHED and sub.remote_tag:
                    requests.append(self._subscribe(sub, 0))
                self.backend.remove(sub.id)
                log.info("back-end subscription of %s to %s (%s) ended: no list holds it",
                         sub.subscriber, sub.resource, sub.event)
                continue
            if sub.phase == IDLE:
                requests.append(self._initial(sub))
            elif sub.phase == ESTABLISHED:
                requests.append(self._refresh(sub))
            else:
                # sent: no final answer within backend_timeout.
                changed += self._failed(sub, "timeout", 408, None)
        return requests, changed

    def _initial(self, sub: BackEndSubscription) -> Request:
        sub.call_id = f"pa-be-{secrets.token_hex(12)}"
        sub.local_tag = secrets.token_hex(8)
        sub.remote_tag = sub.remote_target = sub.route_set = ""
        sub.cseq = 1
        return self._send(sub)

    def _refresh(self, sub: BackEndSubscription) -> Request:
        sub.cseq += 1
        return self._send(sub)

    def _send(self, sub: BackEndSubscription) -> Request:
        self.backend.sending(sub, self.clock.now() + self.settings.backend_timeout)
        return self._subscribe(sub, self.settings.backend_expires)

    def _subscribe(self, sub: BackEndSubscription, expires: int) -> Request:
        """The SUBSCRIBE of `sub` with its current CSeq (Expires: 0 ends
        it, with the next CSeq)."""
        cseq = sub.cseq if expires else sub.cseq + 1
        to = f"<{sub.resource}>" + (f";tag={sub.remote_tag}" if sub.remote_tag else "")
        lines = [f"From: <sip:{sub.subscriber}>;tag={sub.local_tag}", f"To: {to}",
                 f"Call-ID: {sub.call_id}", f"CSeq: {cseq} SUBSCRIBE"]
        if sub.remote_tag and sub.remote_target:
            ruri, nexthop, routes = route_target(sub)
            if routes:
                lines.append("Route: " + ", ".join(routes))
        else:
            ruri = sub.resource
            nexthop = self.settings.backend_next_hop(parse_uri(sub.resource).host)
        pkg = package(sub.event)
        lines += [f"Contact: <{sub.local_contact}>", f"Event: {sub.event}",
                  f"Expires: {expires}", "Accept: " + ", ".join(pkg.formats)]
        return Request("SUBSCRIBE", ruri, nexthop, sub.socket,
                       "\r\n".join(lines) + "\r\n")

    def _failed(self, sub: BackEndSubscription, reason: str, code: int,
                retry_after: int | None, cseq: int | None = None) -> list[int]:
        now = self.clock.now()
        s = self.settings
        if retry_after is not None:
            wait = retry_after
        elif (reason in _AT_ONCE or code == 481) and sub.failures == 0:
            # The dialog is gone (RFC 6665 4.1.2.2): a new one at once.
            wait = 0
        elif reason in _FINAL:
            wait = s.backend_retry_max
        else:
            wait = min(s.backend_retry_max, s.backend_retry_min * 2 ** min(sub.failures, 20))
        before = self.backend.failed(sub.id, sub.call_id, now + wait, reason, code, cseq)
        if before is None:
            return []
        log.info("back-end subscription of %s to %s (%s) failed (%s, %d): retry in %d s",
                 sub.subscriber, sub.resource, sub.event, reason, code, wait)
        return self.backend.feed(sub, "terminated", reason, "", None)

    # -- answers to our SUBSCRIBEs (the reply route) ------------------------------------

    def answered(self, message: bytes) -> list[int]:
        """A final answer to one of our SUBSCRIBEs; returns the list
        subscriptions to notify."""
        try:
            code, resp = parse_response(message)
            cseq, method = parse_cseq(resp.header("cseq"))
            from_ = parse_name_addr(resp.header("from") or "")
            to = parse_name_addr(resp.header("to") or "")
        except BadRequest as e:
            log.info("answer to a back-end SUBSCRIBE ignored: %s", e.reason)
            return []
        if method != "SUBSCRIBE" or code < 200:
            return []
        sub = self.backend.of_dialog(resp.header("call-id") or "", from_.tag)
        if sub is None or sub.cseq != cseq:
            return []
        now = self.clock.now()
        if code < 300:
            expires = _int(resp.header("expires"), self.settings.backend_expires)
            if expires == 0:
                return []      # the answer to our Expires: 0
            target = ""
            contacts = resp.header_list("contact")
            if contacts:
                try:
                    target = parse_name_addr(contacts[0]).uri
                    parse_uri(target)
                except BadRequest:
                    target = ""
            # A UAC's route set is the Record-Route in reverse (RFC 3261 12.1.2).
            routes = ", ".join(reversed(resp.header_list("record-route")))
            refresh_at = now + max(1, expires - max(2, min(expires // 10, 60)))
            self.backend.established(sub.id, sub.call_id, cseq, to.tag, target, routes,
                                     refresh_at, now + expires)
            return []
        retry_after = _int(resp.header("retry-after"), None)
        return self._failed(sub, failure_reason(code), code, retry_after, cseq)

    # -- NOTIFYs of back-end dialogs (the request route) --------------------------------

    def notify(self, req: SipRequest) -> tuple[Outcome, list[int]]:
        """A NOTIFY: 200 and its state fed into the members when it belongs
        to one of our back-end dialogs, 481 otherwise."""
        to = parse_name_addr(req.header("to") or "")
        from_ = parse_name_addr(req.header("from") or "")
        sub = self.backend.of_dialog(req.header("call-id") or "", to.tag)
        if sub is None or (sub.remote_tag and from_.tag != sub.remote_tag):
            outcome = reply(481)
            outcome.detail = "no such back-end subscription"
            return outcome, []
        if not sub.remote_tag:
            target = ""
            contacts = req.header_list("contact")
            if contacts:
                target = parse_name_addr(contacts[0]).uri
            self.backend.dialog_learnt(sub.id, from_.tag, target)
            sub.remote_tag = from_.tag
        state, _, params = (req.header("subscription-state") or "").partition(";")
        state = state.strip().lower()
        values = parse_params(params)
        outcome = reply(200)
        outcome.presentity, outcome.watcher = sub.resource, sub.subscriber
        if state == "terminated":
            reason = values.get("reason", "") or "noresource"
            retry_after = _int(values.get("retry-after"), None)
            outcome.detail = f"back-end terminated ({reason})"
            return outcome, self._failed(sub, reason, 0, retry_after)
        if state not in ("active", "pending"):
            raise BadRequest("Bad Subscription-State")
        content_type = (req.header("content-type") or "").partition(";")[0].strip().lower()
        body = req.body or None
        if body is not None:
            # Relayed unmodified (RFC 4662 7.3), but only what we asked for
            # and no larger than a document of ours may be.
            if content_type not in package(sub.event).formats:
                return reply(415, ("Accept", ", ".join(package(sub.event).formats))), []
            if len(body) > self.settings.max_document_bytes:
                return reply(413), []
        outcome.detail = f"back-end {state}"
        # A pending member shows no document (RFC 4662 5.3).
        changed = self.backend.feed(sub, state, "", content_type if body else "", body,
                                    keep_body=state == "active" and body is None)
        return outcome, changed


def _int(value: str | None, default):
    value = (value or "").strip().split(";")[0].strip()
    return int(value) if value.isdigit() and len(value) < 10 else default


__all__ = ["BackEndSubscriptions", "Request", "failure_reason", "parse_response"]
