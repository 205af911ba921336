"""The private Prosody of tests/prosody.py is a usable XMPP server: clients
log in and exchange presence, an external component (XEP-0114) connects
with its secret, and accounts survive a restart."""

from __future__ import annotations

import asyncio

import pytest

slixmpp = pytest.importorskip("slixmpp", reason="pip install slixmpp")

from prosody import Prosody  # noqa: E402

STEP = 5.0  # seconds any single XMPP exchange may take


@pytest.fixture(scope="module")
def prosody():
    server = Prosody().start()
    server.register("romeo", "r0meo")
    server.register("juliet", "ju1iet")
    yield server
    server.cleanup()


def _plaintext(xmpp) -> None:
    """Our Prosody has no TLS. Recent slixmpp (PyPI's 1.17) tries direct TLS
    and STARTTLS unless these say otherwise; Debian's 1.8 takes flags to
    connect() instead."""
    xmpp.enable_direct_tls = False
    xmpp.enable_starttls = False
    xmpp.enable_plaintext = True


def _connect_client(xmpp, port: int) -> None:
    if hasattr(xmpp, "enable_plaintext"):
        _plaintext(xmpp)
        xmpp.connect("127.0.0.1", port)
    else:
        xmpp.connect(("127.0.0.1", port), force_starttls=False, disable_starttls=True)


class Client:
    """A logged-in slixmpp client that queues every presence it receives."""

    def __init__(self, server: Prosody, user: str, password: str):
        self.jid = f"{user}@{server.domain}"
        # slixmpp refuses every SASL mechanism on an unencrypted stream
        # unless allowed; SCRAM is what Prosody offers first.
        self.xmpp = slixmpp.ClientXMPP(f"{self.jid}/test", password, plugin_config={
            "feature_mechanisms": {"unencrypted_scram": True}})
        # The tests answer subscription requests themselves.
        self.xmpp.auto_authorize = None
        self.xmpp.auto_subscribe = False
        self.presences: asyncio.Queue = asyncio.Queue()
        self.xmpp.add_event_handler("presence", self.presences.put_nowait)
        self.server = server

    async def login(self) -> "Client":
        ready = asyncio.get_running_loop().create_future()

        async def session_start(_):
            # Roster first, then initial presence: RFC 6121 sends
            # subscription requests and contacts' presence only to an
            # available, interested resource.
            await self.xmpp.get_roster(timeout=STEP)
            self.xmpp.send_presence()
            if not ready.done():
                ready.set_result(None)

        def failed(why):
            if not ready.done():
                ready.set_exception(AssertionError(f"{self.jid}: {why}"))

        self.xmpp.add_event_handler("session_start", session_start)
        self.xmpp.add_event_handler("failed_auth", lambda _: failed("authentication failed"))
        _connect_client(self.xmpp, self.server.c2s_port)
        await wait(ready, f"{self.jid} logged in")
        return self

    async def expect(self, what: str, match) -> "slixmpp.Presence":
        """The next presence for which match() is true; others are skipped."""
        async def scan():
            while True:
                presence = await self.presences.get()
                if match(presence):
                    return presence
        return await wait(scan(), f"{self.jid}: {what}")

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self.xmpp.disconnect(wait=1), STEP)
        except asyncio.TimeoutError:
            pass


async def wait(awaitable, what: str):
    try:
        return await asyncio.wait_for(awaitable, STEP)
    except asyncio.TimeoutError:
        raise AssertionError(f"timed out: {what}") from None


def run(coro, server: Prosody):
    """Runs a test coroutine; on failure, shows the server's side too."""
    try:
        asyncio.run(asyncio.wait_for(coro, 4 * STEP))
    except BaseException:
        print(server.log()[-4000:])
        raise


def test_presence_subscription_and_broadcast(prosody):
    async def scenario():
        romeo = await Client(prosody, "romeo", "r0meo").login()
        juliet = await Client(prosody, "juliet", "ju1iet").login()
        try:
            romeo.xmpp.send_presence(pto=juliet.jid, ptype="subscribe")
            request = await juliet.expect("subscribe from romeo",
                                          lambda p: p["type"] == "subscribe")
            assert request["from"].bare == romeo.jid
            juliet.xmpp.send_presence(pto=romeo.jid, ptype="subscribed")
            await romeo.expect("subscribed from juliet",
                               lambda p: p["type"] == "subscribed" and p["from"].bare == juliet.jid)

            juliet.xmpp.send_presence(pshow="away", pstatus="on the balcony")
            seen = await romeo.expect("juliet away",
                                      lambda p: p["from"].bare == juliet.jid and p["show"] == "away")
            assert seen["status"] == "on the balcony"
        finally:
            await romeo.close()
            await juliet.close()

    run(scenario(), prosody)


def test_component_presence_reaches_client(prosody):
    async def scenario():
        juliet = await Client(prosody, "juliet", "ju1iet").login()
        component = slixmpp.ComponentXMPP(prosody.component, prosody.component_secret,
                                          "127.0.0.1", prosody.component_port)
        if hasattr(component, "enable_plaintext"):
            _plaintext(component)
        ready = asyncio.get_running_loop().create_future()
        component.add_event_handler("session_start", lambda _: ready.done() or ready.set_result(None))
        try:
            component.connect()
            await wait(ready, "component handshake")
            component.send_presence(pto=juliet.jid, pfrom=f"alice@{prosody.component}",
                                    ptype="subscribe")
            request = await juliet.expect("subscribe from the component",
                                          lambda p: p["type"] == "subscribe")
            assert request["from"].bare == f"alice@{prosody.component}"
        finally:
            await juliet.close()
            try:
                await asyncio.wait_for(component.disconnect(wait=1), STEP)
            except asyncio.TimeoutError:
                pass

    run(scenario(), prosody)


def test_accounts_survive_restart(prosody):
    ports = (prosody.c2s_port, prosody.component_port)
    prosody.restart()
    assert (prosody.c2s_port, prosody.component_port) == ports

    async def scenario():
        for user, password in (("romeo", "r0meo"), ("juliet", "ju1iet")):
            client = await Client(prosody, user, password).login()
            await client.close()

    run(scenario(), prosody)
