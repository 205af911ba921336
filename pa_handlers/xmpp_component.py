"""The XMPP gateway process: pa_handlers.gateway connected to an XMPP
server as an external component (XEP-0114), with slixmpp.

    PA_CONFIG=/etc/presence-agent/pa.yaml python3 -m pa_handlers.xmpp_component

It reads the presence agent's settings (xmpp_* keys and the database),
keeps no state of its own (the database has it), reconnects when the XMPP
server goes away, and every second makes the XMPP side follow the SIP side
(new and ended SIP subscriptions, changed SIP presence).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time

import slixmpp
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import StanzaPath

from .config import ConfigError, load_settings
from .gateway import Gateway, Stanza
from .store import Database, Store, StoreUnavailable
from .xmpp_mapping import XmppPresence

log = logging.getLogger("pa.gateway")

SYNC_PERIOD = 1.0
RECONNECT_PAUSE = 2.0
REFRESH_PERIOD = 600.0   # well inside gateway.PUBLICATION_LIFETIME


def presence_of(stanza) -> XmppPresence:
    priority = stanza["priority"]
    return XmppPresence(available=stanza["type"] != "unavailable",
                        show=stanza["show"] if stanza["show"] in ("away", "chat", "dnd", "xa") else "",
                        status=stanza["status"] or "",
                        priority=int(priority) if str(priority).lstrip("-").isdigit() else 0,
                        resource=stanza["from"].resource)


class Component(slixmpp.ComponentXMPP):
    def __init__(self, gateway: Gateway, jid: str, secret: str, host: str, port: int):
        super().__init__(jid, secret, host, port)
        self.gateway = gateway
        # The gateway decides every subscription itself, from the database:
        # slixmpp's in-memory roster must not answer anything for it.
        self.remove_handler("Presence")
        self.register_handler(Callback("pa presence", StanzaPath("presence"), self.on_presence))
        self.add_event_handler("session_start", self.on_session_start)
        self.add_event_handler("disconnected", self.on_disconnected)
        self._stopping = False
        self.online = False
        self._attempted = 0.0
        self._refreshed = time.monotonic()
        self.stopped = asyncio.Event()

    def send_all(self, stanzas: list[Stanza]) -> None:
        for s in stanzas:
            presence = s.presence
            self.send_presence(
                pto=s.to_jid, pfrom=s.from_jid, ptype=s.type or None,
                pshow=presence.show if presence and presence.available and presence.show else None,
                pstatus=presence.status if presence and presence.status else None,
                ppriority=presence.priority if presence and presence.available else None)

    def on_presence(self, stanza) -> None:
        kind = stanza["type"]
        sender, receiver = str(stanza["from"]), str(stanza["to"])
        try:
            if kind == "subscribe":
                self.send_all(self.gateway.on_subscribe(sender, receiver))
            elif kind == "unsubscribe":
                self.send_all(self.gateway.on_unsubscribe(sender, receiver))
            elif kind in ("subscribed", "unsubscribed"):
                self.gateway.on_subscription_answer(sender, receiver, kind == "subscribed")
            elif kind == "probe":
                self.send_all(self.gateway.on_probe(sender, receiver))
            elif kind in ("available", "unavailable") or kind in stanza.showtypes:
                self.gateway.on_presence(sender, receiver, presence_of(stanza))
        except StoreUnavailable as e:
            log.error("presence from %s not handled: %s", sender, e)

    async def on_session_start(self, _event) -> None:
        log.info("connected to the XMPP server as %s", self.boundjid)
        self.online = True
        try:
            self.send_all(self.gateway.resync())
        except StoreUnavailable as e:
            log.error("resynchronisation postponed: %s", e)

    def on_disconnected(self, _event) -> None:
        if self.online and not self._stopping:
            log.warning("XMPP server connection lost; reconnecting")
        self.online = False

    def attempt(self) -> None:
        self._attempted = time.monotonic()
        self.connect()

    async def keep_in_step(self) -> None:
        """Every second: (re)connect when needed, XMPP subscriptions follow
        the SIP ones, XMPP watchers hear of changed SIP presence.  The one
        place that reconnects, so that no two connections fight for the
        component's name."""
        while not self._stopping:
            await asyncio.sleep(SYNC_PERIOD)
            if not self.online:
                if time.monotonic() - self._attempted >= RECONNECT_PAUSE and \
                        not self.is_connected():
                    self.attempt()
                continue
            try:
                self.send_all(self.gateway.sync_subscriptions())
                self.send_all(self.gateway.changed_presences())
                if time.monotonic() - self._refreshed >= REFRESH_PERIOD:
                    self.gateway.refresh_publications()
                    self._refreshed = time.monotonic()
            except StoreUnavailable as e:
                log.warning("gateway paused: %s", e)
            except Exception:
                log.exception("gateway step failed")

    def stop(self) -> None:
        self._stopping = True
        self.disconnect()
        self.stopped.set()


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        settings = load_settings(os.environ.get("PA_CONFIG"))
    except ConfigError as e:
        log.error("configuration error: %s", e)
        return 1
    if not settings.xmpp_component:
        log.error("configuration error: xmpp_component is not set; the gateway has nothing to do")
        return 1
    store = Store(Database.for_settings(settings))
    gateway = Gateway(settings, store, time.time)
    host, _, port = settings.xmpp_component_server.partition(":")
    component = Component(gateway, settings.xmpp_component, settings.xmpp_component_secret,
                          host, int(port or 5347))
    loop = asyncio.get_event_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, component.stop)
    if hasattr(component, "enable_plaintext"):
        # Recent slixmpp tries TLS first; XEP-0114 is a plain TCP handshake.
        component.enable_direct_tls = False
        component.enable_starttls = False
        component.enable_plaintext = True
    component.attempt()
    step = loop.create_task(component.keep_in_step())
    try:
        loop.run_until_complete(component.stopped.wait())
    finally:
        step.cancel()
    return 0


if __name__ == "__main__":
    sys.exit(main())
