"""The jabber domain through a real XMPP server: Prosody with our gateway
as an external component, Kamailio, MariaDB; SIP watchers see XMPP users,
XMPP users see SIP users."""

import os
import subprocess
import sys
import time

import pytest

pytest.importorskip("slixmpp", reason="pip install slixmpp")

from conftest import settings  # noqa: E402
from harness import ROOT, Kamailio, Process  # noqa: E402
from helpers import PIDF_NS, pidf, pidf_body, wait_until  # noqa: E402
from prosody import Prosody  # noqa: E402
from sipua import SipUA  # noqa: E402
from xmppclient import Loop, XmppUser  # noqa: E402

# slixmpp objects collected after their loop closed complain; harmless here.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

RPID = "urn:ietf:params:xml:ns:pidf:rpid"
XMPP_DOMAIN = "xmpp.example.org"
COMPONENT = "sip.example.org"
GATEWAY_PYTHON = os.environ.get("PA_TEST_GATEWAY_PYTHON", "/usr/bin/python3")


class GatewayProcess(Process):
    """python3 -m pa_handlers.xmpp_component, as an operator runs it."""

    def __init__(self, config_path: str, log_path: str):
        self.config_path = config_path
        self.log_path = log_path

    def start(self, connections: int = 1) -> "GatewayProcess":
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [GATEWAY_PYTHON, "-m", "pa_handlers.xmpp_component"], cwd=ROOT,
                env=dict(os.environ, PA_CONFIG=self.config_path, PYTHONPATH=ROOT),
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.wait_connected(connections)
        return self

    def connections(self) -> int:
        with open(self.log_path, "rb") as f:
            return f.read().count(b"connected to the XMPP server")

    def wait_connected(self, count: int, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while self.connections() < count:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("gateway not connected:\n" + self.log()[-3000:])
            time.sleep(0.1)



@pytest.fixture(scope="module")
def prosody():
    server = Prosody(domain=XMPP_DOMAIN, component=COMPONENT).start()
    for user in ("juliet", "romeo", "mercutio"):
        server.register(user, "pw-" + user)
    yield server
    server.cleanup()


@pytest.fixture(scope="module")
def kamailio(database, prosody):
    k = Kamailio(settings(database, xmpp_domains=[XMPP_DOMAIN], xmpp_component=COMPONENT,
                          xmpp_component_server=f"127.0.0.1:{prosody.component_port}",
                          xmpp_component_secret=prosody.component_secret,
                          xmpp_sip_domain="127.0.0.1")).start()
    yield k
    k.cleanup()


@pytest.fixture(scope="module")
def gateway(kamailio, tmp_path_factory):
    g = GatewayProcess(kamailio.config_path,
                       str(tmp_path_factory.mktemp("gateway") / "gateway.log")).start()
    yield g
    g.stop()
    if sys.exc_info()[0]:
        print(g.log()[-3000:])


@pytest.fixture(scope="module")
def loop():
    loop = Loop()
    yield loop
    loop.close()


@pytest.fixture
def users(loop, prosody):
    made = []

    def login(name, approve=True):
        made.append(XmppUser(loop, f"{name}@{XMPP_DOMAIN}", "pw-" + name, prosody.c2s_port,
                             approve).login())
        return made[-1]
    yield login
    for user in made:
        user.close()


def basic(body: bytes) -> set[str]:
    root = pidf(body)
    return {t.findtext(f"{{{PIDF_NS}}}status/{{{PIDF_NS}}}basic")
            for t in root.iter(f"{{{PIDF_NS}}}tuple")}


def last_notify(ua, call_id, match, timeout=10.0):
    """The newest NOTIFY of the dialog, once match(body) holds for it."""
    def newest():
        notifies = ua.notifies(call_id)
        return notifies[-1] if notifies and notifies[-1].body and match(notifies[-1].body) \
            else None
    return wait_until(newest, timeout=timeout)


# -- SIP watchers, XMPP presentities -------------------------------------------

def test_a_sip_watcher_sees_an_xmpp_user_come_and_go(gateway, kamailio, users):
    juliet = users("juliet")
    ua = SipUA(kamailio.address, user="alice")
    try:
        r, d = ua.subscribe(f"sip:juliet@{XMPP_DOMAIN}")
        assert r.status == 200
        assert basic(ua.wait_notify(d.call_id).body) == {"closed"}
        # The gateway subscribes on alice's behalf; juliet approves; her
        # presence becomes a publication that Kamailio NOTIFYs.
        request = juliet.wait_for("subscribe", lambda p: p["type"] == "subscribe")
        assert request["from"].bare == f"alice@{COMPONENT}"
        last_notify(ua, d.call_id, lambda b: "open" in basic(b))

        juliet.send(pshow="away", pstatus="on the balcony")
        away = last_notify(ua, d.call_id, lambda b: b"on the balcony" in b)
        assert pidf(away.body).find(f".//{{{RPID}}}away") is not None

        juliet.close()
        last_notify(ua, d.call_id, lambda b: basic(b) == {"closed"})

        # The SIP subscription ends: so does the XMPP one.
        mercutio = users("mercutio")
        r, d2 = ua.subscribe(f"sip:mercutio@{XMPP_DOMAIN}")
        mercutio.wait_for("subscribe", lambda p: p["type"] == "subscribe")
        assert ua.resubscribe(d2, 0).status == 200
        mercutio.wait_for("unsubscribe", lambda p: p["type"] == "unsubscribe"
                          and p["from"].bare == f"alice@{COMPONENT}")
    finally:
        ua.close()


# -- XMPP watchers, SIP presentities ---------------------------------------------

def test_an_xmpp_user_sees_a_sip_users_publish_and_register(gateway, kamailio, users):
    romeo = users("romeo")
    bob_jid = f"bob@{COMPONENT}"
    romeo.send(pto=bob_jid, ptype="subscribe")
    romeo.wait_for("subscribed", lambda p: p["type"] == "subscribed" and p["from"].bare == bob_jid)
    romeo.wait_for("bob offline", lambda p: p["from"].bare == bob_jid
                   and p["type"] == "unavailable")

    bob = SipUA(kamailio.address, user="bob")
    try:
        r = bob.request("PUBLISH", "sip:bob@127.0.0.1",
                        [("Event", "presence"), ("Content-Type", "application/pidf+xml")],
                        pidf_body("sip:bob@127.0.0.1", "desk", "open", note="at my desk"))
        assert r.status == 200
        seen = romeo.wait_for("bob at his desk", lambda p: p["from"].bare == bob_jid
                              and p["type"] == "available" and p["status"] == "at my desk")
        assert seen["show"] == ""
        etag = r.get("sip-etag")
        assert bob.request("PUBLISH", "sip:bob@127.0.0.1",
                           [("Event", "presence"), ("SIP-If-Match", etag),
                            ("Expires", "0")]).status == 200
        romeo.wait_for("bob gone", lambda p: p["from"].bare == bob_jid
                       and p["type"] == "unavailable" and p is romeo.received[-1])
        romeo.forget()
        assert bob.register("sip:bob@127.0.0.1").status == 200
        romeo.wait_for("bob registered", lambda p: p["from"].bare == bob_jid
                       and p["type"] == "available")
    finally:
        bob.close()


# -- restarts -------------------------------------------------------------------

def test_the_gateway_survives_restarts_of_xmpp_server_gateway_and_kamailio(
        prosody, kamailio, gateway, users, loop):
    ua = SipUA(kamailio.address, user="carol")
    try:
        juliet = users("juliet")
        r, d = ua.subscribe(f"sip:juliet@{XMPP_DOMAIN}")
        last_notify(ua, d.call_id, lambda b: "open" in basic(b))

        # The XMPP server restarts: the gateway reconnects and subscribes again.
        connected = gateway.connections()
        juliet.close()
        prosody.restart()
        gateway.wait_connected(connected + 1, timeout=20)
        juliet = users("juliet")
        juliet.send(pshow="dnd", pstatus="after the server restart")
        last_notify(ua, d.call_id, lambda b: b"after the server restart" in b)

        # The gateway restarts: nothing it knew is lost.
        gateway.stop()
        gateway.start(connections=gateway.connections() + 1)
        juliet.send(pshow="chat", pstatus="after the gateway restart")
        last_notify(ua, d.call_id, lambda b: b"after the gateway restart" in b)

        # Kamailio restarts: the subscription and the gateway carry on.
        kamailio.restart()
        juliet.send(pshow="xa", pstatus="after the kamailio restart")
        last_notify(ua, d.call_id, lambda b: b"after the kamailio restart" in b)
    finally:
        ua.close()
