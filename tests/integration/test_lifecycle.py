"""Restarts and database outages: subscriptions live in MySQL, and a lost
database costs requests a quick 500, never the process."""

import time

import pytest

from conftest import settings
from harness import Kamailio, TcpProxy
from helpers import pidf_body, wait_answered, wait_until
from sipua import SipUA


@pytest.fixture(scope="module")
def proxy():
    p = TcpProxy(("127.0.0.1", 3306))
    yield p
    p.cut()


@pytest.fixture(scope="module")
def kamailio(database, proxy):
    """Reaches the database through a proxy the tests can cut."""
    k = Kamailio(settings(database, db_url=database.url(port=proxy.port), db_timeout=2,
                          retry_after=7), usrloc_db_url=database.url()).start()
    yield k
    k.cleanup()


def test_restart_keeps_subscriptions_and_their_cseq(kamailio, ua, presentity, database):
    _, d = ua.subscribe(presentity, expires=600)
    ua.wait_notify(d.call_id)
    assert ua.resubscribe(d, 600).status == 200
    assert ua.wait_notify(d.call_id, 2).cseq[0] == 2
    # Its answer recorded before the stop (one lost with the process would
    # hold the next NOTIFY until notify_timeout: test_notify_in_flight).
    wait_answered(database, d.call_id)

    kamailio.restart()

    assert ua.resubscribe(d, 3).status == 200
    assert ua.wait_notify(d.call_id, 3).cseq[0] == 3
    # The timers of the new process know the subscription too.
    final = ua.wait_notify(d.call_id, 4, timeout=8)
    assert final.subscription_state() == ("terminated", {"reason": "timeout"})
    assert final.cseq[0] == 4


def test_database_outage_gets_500_with_retry_after_then_recovers(kamailio, ua, presentity,
                                                                 proxy):
    r, d = ua.subscribe(presentity)
    assert r.status == 200
    proxy.cut()
    try:
        for _ in range(3):
            started = time.monotonic()
            r, _ = ua.subscribe(presentity, timeout=10)
            assert r.status == 500
            assert r.get("retry-after") == "7"
            assert time.monotonic() - started < 4
        # The in-dialog path and PUBLISH fail the same way, and Kamailio
        # keeps serving.
        assert ua.resubscribe(d, 600, timeout=10).status == 500
        r = ua.request("PUBLISH", presentity, [("Event", "presence"),
                                               ("Content-Type", "application/pidf+xml")],
                       pidf_body(presentity, "t", "open"), timeout=10)
        assert r.status == 500 and r.get("retry-after") == "7"
        assert kamailio.alive()
    finally:
        proxy.restore()

    def subscribed():
        r, d2 = ua.subscribe(presentity)
        return (r, d2) if r.status == 200 else None
    r, d2 = wait_until(subscribed, timeout=10, interval=0.5)
    assert ua.wait_notify(d2.call_id).subscription_state()[0] == "active"
    assert "Traceback" not in kamailio.log()


def test_start_with_database_down_then_serve_when_it_returns(database, presentity):
    dead = TcpProxy(("127.0.0.1", 3306))
    dead.cut()
    k = Kamailio(settings(database, db_url=database.url(port=dead.port), db_timeout=1),
                 usrloc_db_url=database.url())
    try:
        k.start()
        ua = SipUA(k.address)
        try:
            r, _ = ua.subscribe(presentity)
            assert r.status == 500 and r.get("retry-after")
            dead.restore()
            r, d = wait_until(lambda: (lambda r, d: (r, d) if r.status == 200 else None)(
                *ua.subscribe(presentity)), timeout=10, interval=0.5)
            assert ua.wait_notify(d.call_id).get("content-type") == "application/pidf+xml"
        finally:
            ua.close()
        assert "not reachable at start" in k.log()
    finally:
        k.cleanup()
        dead.cut()
