"""The presence agent: the entry points Kamailio calls, as plain values.

Each entry point takes what Kamailio received and returns what to send.
Nothing here raises into Kamailio: bad input becomes a 4xx, an unreachable
database a 500 with Retry-After, and anything unexpected a logged 500.
"""

from __future__ import annotations

import logging
from typing import Callable

from . import metrics
from .authorization import Authorizer
from .backend import BackEndSubscriptions, Request
from .clock import Clock, clock_of
from .compositor import Compositor
from .config import Settings
from .messages import Context, Notify, Outcome, reply
from .notifier import Notifier
from .packages import PRESENCE
from .records import PRESENCE_DOMAINS, DocumentKey, Task, TaskKind
from .registration import Binding, Registrations
from .sip import (BadRequest, SipRequest, parse_name_addr, parse_request, parse_uri,
                  printable)
from .store import Store, StoreUnavailable, warn_outage
from .xcap_server import HttpReply, HttpRequest, XcapServer

log = logging.getLogger("pa")


class PresenceAgent:
    """Builds each role with the settings, the repositories it uses and the
    one clock, and guards every entry point."""

    def __init__(self, settings: Settings, store: Store,
                 clock: Clock | Callable[[], float] | None = None):
        self.settings = settings
        self.store = store
        self.clock = clock_of(clock)
        authorizer = Authorizer(settings, store.decisions, self.clock)
        self.notifier = Notifier(settings, store.subscriptions, store.notifications, authorizer,
                                 self.clock, store.lists, store.decisions)
        self.compositor = Compositor(settings, store.documents, self.clock,
                                     self.notifier.fan_out)
        self.registrations = Registrations(settings, self.compositor, self.clock)
        self.xcap = XcapServer(settings, store.decisions, self.clock, self.notifier.reauthorize,
                               store.lists, self.notifier.rls.lists_changed)
        self.backend = BackEndSubscriptions(settings, store.backend, self.clock)
        self.tasks = store.tasks
        self._next_sweep = 0.0
        self._next_backend_sweep = 0.0
        self._unanswered = 0
        # What each kind of task left by pa-admin or the XMPP gateway does.
        self._task_handlers: dict[TaskKind, Callable[[Task], list[Notify]]] = {
            TaskKind.FAN_OUT: lambda t: self.notifier.fan_out(
                DocumentKey(t.presentity, t.presence_domain, t.argument or PRESENCE.name)),
            TaskKind.REAUTHORIZE: lambda t: self.notifier.reauthorize(t.presentity),
            TaskKind.REMOVE: lambda t: self.notifier.remove_watcher(
                t.presentity, t.presence_domain, t.argument),
            TaskKind.END: lambda t: self.notifier.end_call(t.argument),
            TaskKind.SWEEP: self._sweep_soon,
        }

    def _sweep_soon(self, task: Task) -> list[Notify]:
        self._next_sweep = 0.0  # on_timer sweeps right after
        return []

    def handle_subscription(self, message: bytes, ctx: Context, domain: str) -> Outcome:
        return self._guard("handle_subscription", domain, message,
                           lambda req: self.notifier.subscribe(req, ctx, domain))

    def handle_publish(self, message: bytes, ctx: Context, domain: str) -> Outcome:
        return self._guard("handle_publish", domain, message,
                           lambda req: self.compositor.publish(req, ctx, domain))

    def handle_registration(self, domain: str, aor: str, bindings: list[Binding]) -> list[Notify]:
        """After a REGISTER was saved: the AOR's bindings as usrloc has them."""
        return self._guard_event("handle_registration", domain,
                                 lambda: self.registrations.bindings_changed(domain, aor, bindings))

    def handle_binding_expired(self, domain: str, aor: str, key: str) -> list[Notify]:
        """usrloc's contact-expired event."""
        return self._guard_event("handle_binding_expired", domain,
                                 lambda: self.registrations.binding_expired(domain, aor, key))

    def handle_notify_reply(self, dialog: tuple[str, str, str], cseq: int,
                            code: int) -> list[Notify]:
        """A final answer to our NOTIFY with CSeq `cseq` (Call-ID, our tag,
        the watcher's tag); one that answers no NOTIFY in flight changes
        nothing."""
        try:
            return self.notifier.notify_answered(dialog, cseq, code) + self.notifier.rls.flush()
        except StoreUnavailable as e:
            # The NOTIFY stays in flight until its deadline: nothing is lost.
            log.warning("answer %d to NOTIFY (call-id=%s) not recorded: %s", code, dialog[0], e)
            return []

    def handle_notify_unsendable(self, dialog: tuple[str, str, str], cseq: int) -> list[Notify]:
        """Our NOTIFY with CSeq `cseq` could not be sent (no route to its
        target): the subscription ends."""
        try:
            return self.notifier.notify_unsendable(dialog, cseq)
        except StoreUnavailable as e:
            log.warning("unsendable NOTIFY (call-id=%s) not handled: %s", dialog[0], e)
            return []

    def handle_notify_answers(self, answers: list[tuple[tuple[str, str, str], int]]
                              ) -> list[Notify]:
        """Successful answers to our NOTIFYs, (dialog, CSeq) each, collected
        over a moment (Kamailio's mqueue pa_answers): ended together."""
        try:
            notifies = self.notifier.notifies_answered(answers)
            # List subscriptions whose members changed while their NOTIFY
            # was in flight go now, not at the next timer.
            return notifies + self.notifier.rls.flush()
        except StoreUnavailable as e:
            log.warning("%d answers to NOTIFYs not recorded: %s", len(answers), e)
            return []

    # -- back-end subscriptions (members of other domains, backend.py) ------------------

    def handle_backend_notify(self, message: bytes, ctx: Context) -> Outcome:
        """A NOTIFY of one of our back-end subscriptions (481 for any
        other); the lists it changes are told."""
        def handle(req: SipRequest) -> Outcome:
            outcome, changed = self.backend.notify(req)
            outcome.notifies += self.notifier.rls.changed(changed)
            return outcome
        return self._guard("handle_backend_notify", "registrar", message, handle)

    def handle_backend_reply(self, message: bytes) -> list[Notify]:
        """A final answer to one of our back-end SUBSCRIBEs."""
        try:
            return self.notifier.rls.changed(self.backend.answered(message))
        except StoreUnavailable as e:
            # The SUBSCRIBE counts as unanswered: it times out and is retried.
            log.warning("answer to a back-end SUBSCRIBE not recorded: %s", e)
            return []

    def backend_due(self) -> tuple[list[Request], list[Notify]]:
        """Every second: the back-end SUBSCRIBEs due (initial, refresh,
        retry, end), and the list NOTIFYs of members that failed; every
        timer_interval those no list needs any more are found."""
        if not self.backend.enabled:
            return [], []
        now = self.clock.now()
        sweep = now >= self._next_backend_sweep
        if sweep:
            self._next_backend_sweep = now + self.settings.timer_interval
        try:
            requests, changed = self.backend.due(sweep)
            return requests, self.notifier.rls.changed(changed)
        except StoreUnavailable as e:
            warn_outage(log, "back-end subscriptions", e)
            return [], []

    def unanswered_notifies(self) -> int:
        """How many NOTIFYs the timers found unanswered since the last
        call (for the statistics)."""
        count, self._unanswered = self._unanswered, 0
        return count

    def handle_xcap(self, req: HttpRequest) -> tuple[HttpReply, list[Notify]]:
        """An HTTP request for the built-in XCAP server."""
        try:
            return self.xcap.handle(req)
        except StoreUnavailable as e:
            log.error("handle_xcap: %s", e)
            return HttpReply(503, "Service Unavailable",
                             headers=(("Retry-After", str(self.settings.retry_after)),)), []
        except Exception:
            log.exception("handle_xcap failed")
            return HttpReply(500, "Internal Server Error"), []

    def on_timer(self) -> list[Notify]:
        """Called every second: the tasks other processes left, and every
        timer_interval the sweeps."""
        notifies = self.run_tasks()
        try:
            notifies += self.notifier.rls.flush()
        except StoreUnavailable as e:
            warn_outage(log, "list NOTIFYs", e)
        now = self.clock.now()
        if now < self._next_sweep:
            return notifies
        self._next_sweep = now + self.settings.timer_interval
        notifies += self.notifier.expire_subscriptions()
        unanswered, count = self.notifier.notify_unanswered()
        notifies += unanswered
        self._unanswered += count
        notifies += self.compositor.expire_publications(self.registrations.on_expiry)
        notifies += self.notifier.refresh_rules()
        return notifies

    def gauges(self) -> dict[str, int]:
        """The cluster-wide gauges (metrics.GAUGES); empty while the
        database is unreachable."""
        try:
            return metrics.gauges(self.store.admin.counts(self.clock.now()))
        except StoreUnavailable as e:
            warn_outage(log, "gauges", e)
            return {}

    def run_tasks(self, limit: int = 100) -> list[Notify]:
        """What the XMPP gateway and pa-admin asked Kamailio to do: they
        cannot send SIP themselves."""
        notifies: list[Notify] = []
        try:
            tasks = self.tasks.claim(limit)
        except StoreUnavailable as e:
            warn_outage(log, "tasks", e)
            return notifies
        for task in tasks:
            handle = self._task_handlers.get(task.kind)
            if handle is None:
                log.error("unknown task %r", task.kind)
                continue
            try:
                notifies += handle(task)
            except StoreUnavailable as e:
                log.warning("task %s of %s not done: %s", task.kind, task.presentity, e)
        return notifies

    def _guard_event(self, name: str, domain: str, handle: Callable[[], list[Notify]]) -> list[Notify]:
        """Like _guard, for events that have no request to answer."""
        if not self._known_domain(name, domain):
            return []
        try:
            return handle()
        except BadRequest as e:
            log.warning("%s: %s", name, e.reason)
        except StoreUnavailable as e:
            log.error("%s: %s", name, e)
        except Exception:
            log.exception("%s failed", name)
        return []

    @staticmethod
    def _known_domain(name: str, domain: str) -> bool:
        if domain in PRESENCE_DOMAINS:
            return True
        log.error("%s: unknown domain %r (known: %s); check the routing script",
                  name, domain, ", ".join(PRESENCE_DOMAINS))
        return False

    def _guard(self, name: str, domain: str, message: bytes,
               handle: Callable[[SipRequest], Outcome]) -> Outcome:
        if not self._known_domain(name, domain):
            return reply(500, reason="Server Internal Error (Unknown Presence Domain)")
        req = None
        try:
            req = parse_request(message)
            outcome = handle(req)
        except BadRequest as e:
            outcome = reply(400, reason=e.reason)
            outcome.detail = e.reason
        except StoreUnavailable as e:
            log.error("%s: %s", name, e)
            outcome = reply(500, ("Retry-After", str(self.settings.retry_after)),
                            reason="Server Internal Error (Database Unavailable)")
            outcome.detail = "database unavailable"
        except Exception:
            log.exception("%s failed", name)
            outcome = reply(500)
            outcome.detail = "internal error"
        if log.isEnabledFor(logging.INFO):
            log_request(req, outcome)
        return outcome


def log_request(req: SipRequest | None, outcome: Outcome) -> None:
    """One line per handled request: what operators grep for."""
    method, presentity, party, call_id = "?", "-", "-", "-"
    if req is not None:
        # What the handler decided on, without parsing again; To and From
        # when it stopped before.
        method = req.method
        presentity = outcome.presentity or _aor(req.header("to"))
        party = outcome.watcher or _aor(req.header("from"))
        call_id = req.header("call-id") or "-"
    role = "publisher" if method == "PUBLISH" else "watcher"
    detail = outcome.detail or (outcome.reply.reason if outcome.reply.code >= 300 else "")
    # Addresses are %-decoded: what they decode to must not forge lines.
    log.info("%s presentity=%s %s=%s answer=%d call-id=%s%s", method, printable(presentity),
             role, printable(party), outcome.reply.code, printable(call_id),
             f" ({printable(detail)})" if detail else "")


def _aor(value: str | None) -> str:
    """user@host of a From/To value, or what can be shown of a bad one."""
    if not value:
        return "-"
    try:
        return parse_uri(parse_name_addr(value).uri).aor
    except BadRequest:
        return repr(value[:80])
