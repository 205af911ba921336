"""The handlers called from native kamailio.cfg routing with python_exec(),
as SER's manual shows (kemi/kamailio-native.cfg)."""

import pytest

from conftest import settings
from harness import NATIVE_CFG, Kamailio
from helpers import pidf_body, tuples, wait_until
from sipua import SipUA


@pytest.fixture(scope="module")
def kamailio(database):
    k = Kamailio(settings(database), cfg=NATIVE_CFG).start()
    yield k
    k.cleanup()


def test_subscribe_through_python_exec(ua, presentity):
    r, d = ua.subscribe(presentity, expires=300)
    assert r.status == 200 and r.get("expires") == "300"
    n = ua.wait_notify(d.call_id)
    assert n.subscription_state() == ("active", {"expires": "300"})
    assert [basic for _, basic in tuples(n.body)] == ["closed"]


def test_notify_answers_reach_the_plugin_from_onreply_route(ua, presentity, database):
    ua.notify_answer = 481
    _, d = ua.subscribe(presentity)
    ua.wait_notify(d.call_id)
    wait_until(lambda: not database.query(
        "SELECT 1 FROM pa_subscription WHERE call_id = %s", (d.call_id,)))


def test_timer_route_expires_subscriptions(ua, presentity):
    _, d = ua.subscribe(presentity, expires=2)
    n = ua.wait_notify(d.call_id, 2, timeout=8)
    assert n.subscription_state() == ("terminated", {"reason": "timeout"})


def test_publish_through_python_exec_notifies_watchers(ua, presentity):
    _, d = ua.subscribe(presentity)
    ua.wait_notify(d.call_id)
    r = ua.request("PUBLISH", presentity, body=pidf_body(presentity, "dev1", "open"),
                   headers=[("Event", "presence"), ("Content-Type", "application/pidf+xml")])
    assert r.status == 200 and r.get("sip-etag")
    assert tuples(ua.wait_notify(d.call_id, 2).body) == [("dev1", "open")]


def test_register_through_python_exec_shows_the_contact(kamailio, ua, presentity):
    _, d = ua.subscribe(presentity)
    ua.wait_notify(d.call_id)
    phone = SipUA(kamailio.address, user=presentity[4:].split("@")[0])
    try:
        assert phone.register(presentity, q="0.6").status == 200
        body = ua.wait_notify(d.call_id, 2).body.decode()
        assert f'priority="0.6">{phone.contact}</contact>' in body
        assert "<basic>open</basic>" in body
    finally:
        phone.close()


def test_only_the_authenticated_presentity_may_publish(database, tmp_path, presentity):
    """auth: implicit; the routing hands the plugin the identity it
    authenticated (here, for the test, the From URI)."""
    cfg = tmp_path / "native-publisher.cfg"
    with open(NATIVE_CFG) as f:
        cfg.write_text(f.read().replace('python_exec("handle_publish", "registrar");',
                                        '$avp(pa_publisher) = $fu;\n\t\t'
                                        'python_exec("handle_publish", "registrar");'))
    k = Kamailio(settings(database, auth="implicit"), cfg=str(cfg)).start()
    user = presentity[4:].split("@")[0]
    owner, stranger = SipUA(k.address, user=user), SipUA(k.address, user="mallory")
    try:
        body = pidf_body(presentity, "t", "open")
        headers = [("Event", "presence"), ("Content-Type", "application/pidf+xml")]
        assert stranger.request("PUBLISH", presentity, headers, body).status == 403
        assert owner.request("PUBLISH", presentity, headers, body).status == 200
        assert len(database.query("SELECT 1 FROM pa_publication WHERE presentity = %s",
                                  (presentity[4:],))) == 1
    finally:
        owner.close()
        stranger.close()
        k.cleanup()


def test_unknown_domain_logs_a_clear_error(database, tmp_path, presentity):
    cfg = tmp_path / "native-bad-domain.cfg"
    with open(NATIVE_CFG) as f:
        cfg.write_text(f.read().replace('"handle_subscription", "registrar"',
                                        '"handle_subscription", "registar"'))
    k = Kamailio(settings(database), cfg=str(cfg)).start()
    try:
        ua = SipUA(k.address)
        try:
            r, _ = ua.subscribe(presentity)
        finally:
            ua.close()
        assert r.status == 500
        assert "unknown domain 'registar' (known: registrar, jabber)" in k.log()
    finally:
        k.cleanup()
