"""XMPP users for the integration tests: slixmpp clients running in an
asyncio loop of their own thread, driven from synchronous test code next to
the SIP test UA."""

from __future__ import annotations

import asyncio
import threading

import slixmpp

STEP = 8.0


def plaintext(xmpp) -> None:
    """The test Prosody has no TLS: PyPI's slixmpp (1.17) must be told not
    to try it; Debian's 1.8 takes flags to connect() instead."""
    xmpp.enable_direct_tls = False
    xmpp.enable_starttls = False
    xmpp.enable_plaintext = True


class Loop:
    """One asyncio loop in a daemon thread for every client of a test."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = STEP):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class XmppUser:
    """A logged-in XMPP user that records every presence it receives and
    answers subscription requests as told (approve=True/False/None)."""

    def __init__(self, loop: Loop, jid: str, password: str, port: int, approve=True,
                 resource: str = "phone"):
        self.loop = loop
        self.jid = jid
        self.port = port
        self.approve = approve
        self.received: list = []
        self._changed = threading.Condition()

        async def make():
            # slixmpp binds to the loop running when it is built.
            xmpp = slixmpp.ClientXMPP(f"{jid}/{resource}", password, plugin_config={
                "feature_mechanisms": {"unencrypted_scram": True}})
            xmpp.auto_authorize = None
            xmpp.auto_subscribe = False
            xmpp.add_event_handler("presence", self._on_presence)
            return xmpp
        self.xmpp = loop.run(make())

    def _on_presence(self, presence):
        with self._changed:
            self.received.append(presence)
            self._changed.notify_all()
        if presence["type"] == "subscribe" and self.approve is not None:
            self.xmpp.send_presence(pto=presence["from"].bare,
                                    ptype="subscribed" if self.approve else "unsubscribed")

    def login(self) -> "XmppUser":
        async def go():
            ready = asyncio.get_running_loop().create_future()

            async def started(_):
                await self.xmpp.get_roster(timeout=STEP)
                self.xmpp.send_presence()
                if not ready.done():
                    ready.set_result(None)
            self.xmpp.add_event_handler("session_start", started)
            self.xmpp.add_event_handler(
                "failed_auth", lambda _: ready.done() or ready.set_exception(
                    AssertionError(f"{self.jid}: authentication failed")))
            if hasattr(self.xmpp, "enable_plaintext"):
                plaintext(self.xmpp)
                self.xmpp.connect("127.0.0.1", self.port)
            else:
                self.xmpp.connect(("127.0.0.1", self.port), force_starttls=False,
                                  disable_starttls=True)
            await asyncio.wait_for(ready, STEP)
        self.loop.run(go())
        return self

    def send(self, **kw) -> None:
        """send_presence(**kw) in the client's loop."""
        self.loop.loop.call_soon_threadsafe(lambda: self.xmpp.send_presence(**kw))

    def wait_for(self, what: str, match, timeout: float = STEP):
        """The first received presence (old or new) for which match() is
        true."""
        with self._changed:
            done = self._changed.wait_for(
                lambda: any(match(p) for p in self.received), timeout)
            if not done:
                raise AssertionError(f"{self.jid}: no {what} in "
                                     f"{[(str(p['from']), p['type'], p['show']) for p in self.received]}")
            return next(p for p in self.received if match(p))

    def forget(self) -> None:
        with self._changed:
            self.received.clear()

    def close(self) -> None:
        async def go():
            try:
                await asyncio.wait_for(self.xmpp.disconnect(wait=1), STEP)
            except asyncio.TimeoutError:
                pass
        try:
            self.loop.run(go(), timeout=STEP + 2)
        except Exception:
            pass
