"""The presence agent: the entry points Kamailio calls, as plain values.

Each entry point takes what Kamailio received and returns what to send.
Nothing here raises into Kamailio: bad input becomes a 4xx, an unreachable
database a 500 with Retry-After, and anything unexpected a logged 500.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from .config import Settings
from .messages import Context, Notify, Outcome, reply
from .compositor import Compositor
from .notifier import Notifier
from .sip import BadRequest, parse_request
from .store import Store, StoreUnavailable

log = logging.getLogger("pa")

# The handlers' domain argument: where presence state comes from besides
# PUBLISH (SER's registrar and jabber).  Each is its own namespace.
KNOWN_DOMAINS = ("registrar", "jabber")


class PresenceAgent:
    def __init__(self, settings: Settings, store: Store, clock: Callable[[], float] = time.time):
        self.settings = settings
        self.store = store
        self.clock = clock
        self.notifier = Notifier(settings, store, clock)
        self.compositor = Compositor(settings, store, self.notifier, clock)
        self._next_sweep = 0.0

    def handle_subscription(self, message: bytes, ctx: Context, domain: str) -> Outcome:
        return self._guard("handle_subscription", domain,
                           lambda: self.notifier.subscribe(parse_request(message), ctx, domain))

    def handle_publish(self, message: bytes, ctx: Context, domain: str) -> Outcome:
        return self._guard("handle_publish", domain,
                           lambda: self.compositor.publish(parse_request(message), ctx, domain))

    def handle_notify_reply(self, dialog: tuple[str, str, str], cseq: int, code: int) -> None:
        try:
            self.notifier.notify_answered(dialog, cseq, code)
        except StoreUnavailable as e:
            log.warning("answer %d to NOTIFY (call-id=%s) not recorded: %s", code, dialog[0], e)

    def on_timer(self) -> list[Notify]:
        """Called every second; runs the sweeps every timer_interval."""
        now = self.clock()
        if now < self._next_sweep:
            return []
        self._next_sweep = now + self.settings.timer_interval
        notifies = self.notifier.expire_subscriptions()
        notifies += self.compositor.expire_publications()
        self.notifier.drop_unanswered()
        return notifies

    def _guard(self, name: str, domain: str, handle: Callable[[], Outcome]) -> Outcome:
        if domain not in KNOWN_DOMAINS:
            log.error("%s: unknown domain %r (known: %s); check the routing script",
                      name, domain, ", ".join(KNOWN_DOMAINS))
            return reply(500, reason="Server Internal Error (Unknown Presence Domain)")
        try:
            return handle()
        except BadRequest as e:
            return reply(400, reason=e.reason)
        except StoreUnavailable as e:
            log.error("%s: %s", name, e)
            return reply(500, ("Retry-After", str(self.settings.retry_after)),
                         reason="Server Internal Error (Database Unavailable)")
        except Exception:
            log.exception("%s failed", name)
            return reply(500)
