"""SUBSCRIBE and NOTIFY against real Kamailio (kamailio.cfg.sample) and
MariaDB: one test per row of the SUBSCRIBE table and per NOTIFY rule."""

import time

import pytest

from helpers import tuples, wait_until
from sipua import SipUA, rand

PIDF = "application/pidf+xml"


def rows(database, dialog):
    return database.query("SELECT expires_at, remote_target, local_cseq FROM pa_subscription"
                          " WHERE call_id = %s", (dialog.call_id,))


# -- the SUBSCRIBE table ---------------------------------------------------

def test_missing_event_gets_489_with_allow_events(ua, presentity):
    r = ua.request("SUBSCRIBE", presentity, headers=[("Expires", "60")])
    assert r.status == 489
    assert "presence" in r.get("allow-events")


def test_unserved_event_gets_489(ua, presentity):
    r, _ = ua.subscribe(presentity, event="conference")
    assert r.status == 489
    assert r.get("allow-events") == "presence, presence.winfo, dialog, message-summary, reg"


@pytest.mark.parametrize("accept", ["text/plain", "application/xml;q=1, image/*", ""])
def test_accept_we_cannot_serve_gets_406(ua, presentity, accept):
    r, _ = ua.subscribe(presentity, headers=[("Accept", accept)])
    assert r.status == 406


@pytest.mark.parametrize("accept", [None, PIDF, "application/*", "*/*",
                                    "text/plain, application/pidf+xml;q=0.4"])
def test_acceptable_or_absent_accept_gets_pidf(ua, presentity, accept):
    r, d = ua.subscribe(presentity, headers=[("Accept", accept)] if accept is not None else [])
    assert r.status == 200
    assert ua.wait_notify(d.call_id).get("content-type") == PIDF


def test_expires_below_minimum_gets_423_with_min_expires(ua, presentity):
    r, _ = ua.subscribe(presentity, expires=1)
    assert r.status == 423
    assert r.get("min-expires") == "2"


def test_expires_above_maximum_is_clamped(ua, presentity, database):
    r, d = ua.subscribe(presentity, expires=99999999999)
    assert r.status == 200
    assert r.get("expires") == "1800"
    assert ua.wait_notify(d.call_id).subscription_state() == ("active", {"expires": "1800"})
    assert abs(rows(database, d)[0][0] - (time.time() + 1800)) < 5


def test_no_expires_gets_default_expires(ua, presentity):
    r, d = ua.subscribe(presentity, expires=None)
    assert r.status == 200
    assert r.get("expires") == "900"
    assert ua.wait_notify(d.call_id).subscription_state() == ("active", {"expires": "900"})


def test_initial_subscribe_gets_200_then_notify_with_the_document(ua, presentity, kamailio):
    r, d = ua.subscribe(presentity, expires=600)
    assert r.status == 200
    to_tag = r.tag("to")
    assert to_tag
    assert r.get("expires") == "600"
    assert f"127.0.0.1:{kamailio.port}" in r.get("contact")

    n = ua.wait_notify(d.call_id)
    assert n.start == f"NOTIFY {ua.contact} SIP/2.0"
    assert n.tag("from") == to_tag
    assert n.tag("to") == d.local_tag
    assert n.call_id == d.call_id
    assert n.cseq == (1, "NOTIFY")
    assert n.get("event") == "presence"
    assert n.subscription_state() == ("active", {"expires": "600"})
    assert n.get("content-type") == PIDF
    assert f"127.0.0.1:{kamailio.port}" in n.get("contact")
    assert n.get("max-forwards")


def test_presentity_nobody_published_for_is_one_closed_tuple(ua, presentity):
    _, d = ua.subscribe(presentity)
    body = ua.wait_notify(d.call_id).body
    assert [basic for _, basic in tuples(body)] == ["closed"]
    assert b'entity="' + presentity.encode() + b'"' in body


def test_fetch_gets_one_terminated_notify_and_stores_nothing(ua, presentity, database):
    r, d = ua.subscribe(presentity, expires=0)
    assert r.status == 200
    assert r.get("expires") == "0"
    n = ua.wait_notify(d.call_id)
    assert n.subscription_state() == ("terminated", {"reason": "timeout"})
    assert [basic for _, basic in tuples(n.body)] == ["closed"]
    assert rows(database, d) == []
    assert ua.quiet(d.call_id, 0.5) == []
    assert ua.resubscribe(d, 600).status == 481


def test_refresh_extends_updates_the_target_and_notifies(ua, presentity, database, kamailio):
    _, d = ua.subscribe(presentity, expires=300)
    ua.wait_notify(d.call_id)
    other = SipUA(kamailio.address, user="alice2")
    try:
        r = ua.resubscribe(d, 1200, contact=other.contact)
        assert r.status == 200
        assert r.get("expires") == "1200"
        # The refresh's NOTIFY goes to the new remote target.
        n = other.wait_notify(d.call_id)
        assert n.start == f"NOTIFY {other.contact} SIP/2.0"
        assert n.cseq == (2, "NOTIFY")
        assert n.subscription_state() == ("active", {"expires": "1200"})
        assert tuples(n.body)
        expires_at, target, _ = rows(database, d)[0]
        assert target == other.contact
        assert abs(expires_at - (time.time() + 1200)) < 5
    finally:
        other.close()


def test_unsubscribe_gets_final_terminated_notify_and_removes(ua, presentity, database):
    _, d = ua.subscribe(presentity)
    ua.wait_notify(d.call_id)
    r = ua.resubscribe(d, 0)
    assert r.status == 200
    assert r.get("expires") == "0"
    n = ua.wait_notify(d.call_id, 2)
    assert n.subscription_state() == ("terminated", {"reason": "timeout"})
    assert n.cseq == (2, "NOTIFY")
    assert rows(database, d) == []
    assert ua.resubscribe(d, 600).status == 481


def test_unknown_dialog_gets_481(ua, presentity):
    _, d = ua.subscribe(presentity)
    d.remote_tag = "not-our-tag"
    assert ua.resubscribe(d, 600).status == 481


def test_stale_cseq_gets_500(ua, presentity):
    _, d = ua.subscribe(presentity)
    ua.wait_notify(d.call_id)
    assert ua.resubscribe(d, 600).status == 200
    d.cseq -= 2
    r = ua.resubscribe(d, 600)
    assert r.status == 500


def test_event_id_is_echoed_and_part_of_the_subscription(ua, presentity):
    r, d = ua.subscribe(presentity, event="presence;id=list-7")
    assert r.status == 200
    assert ua.wait_notify(d.call_id).get("event") == "presence;id=list-7"
    assert ua.resubscribe(d, 600).status == 200
    assert ua.wait_notify(d.call_id, 2).get("event") == "presence;id=list-7"
    d.event = "presence"  # a refresh without the id names another subscription
    assert ua.resubscribe(d, 600).status == 481


# -- NOTIFY rules ----------------------------------------------------------

def test_notify_follows_the_record_route_set(ua, presentity, kamailio):
    proxy = SipUA(kamailio.address, user="proxy")
    try:
        first = f"<sip:127.0.0.1:{proxy.port};lr>"
        r, d = ua.subscribe(presentity, headers=[
            ("Record-Route", f"{first}, <sip:second.invalid;lr;foo=bar>")])
        assert r.status == 200
        # Loose routing: sent to the first route, request-URI the watcher.
        n = proxy.wait_notify(d.call_id)
        assert n.start == f"NOTIFY {ua.contact} SIP/2.0"
        assert n.all("route") == [f"{first}, <sip:second.invalid;lr;foo=bar>"]
        assert ua.notifies(d.call_id) == []
    finally:
        proxy.close()


def test_notify_cseq_grows_across_processes(ua, presentity, kamailio):
    """UDP workers, a TCP worker and the timer process all send NOTIFYs
    in one dialog; the CSeq comes from the database, so it grows."""
    _, d = ua.subscribe(presentity, expires=300)
    for n in range(3):
        # Each after the NOTIFY before (else they would come together).
        ua.wait_notify(d.call_id, n + 1)
        assert ua.resubscribe(d, 300).status == 200
    ua.wait_notify(d.call_id, 4)
    tcp = SipUA(kamailio.address, transport="tcp", user="alice")
    try:
        d.cseq += 1
        tcp.send_raw(tcp.build("SUBSCRIBE", d.target, call_id=d.call_id,
                               from_=f"{d.local_uri};tag={d.local_tag}",
                               to=f"{d.remote_uri};tag={d.remote_tag}", cseq=d.cseq,
                               headers=[("Event", "presence"), ("Expires", "2")],
                               contact=ua.contact))
        assert tcp.wait_response(d.call_id, d.cseq).status == 200
    finally:
        tcp.close()
    final = ua.wait_notify(d.call_id, 6, timeout=8)  # the expiry, from the timer process
    assert final.subscription_state()[0] == "terminated"
    cseqs = [n.cseq[0] for n in ua.notifies(d.call_id)]
    assert cseqs == [1, 2, 3, 4, 5, 6]


def test_expiry_sends_terminated_timeout_within_one_timer_interval(ua, presentity, database):
    r, d = ua.subscribe(presentity, expires=2)
    assert r.status == 200
    subscribed = time.monotonic()
    n = ua.wait_notify(d.call_id, 2, timeout=8)
    assert n.subscription_state() == ("terminated", {"reason": "timeout"})
    assert n.cseq == (2, "NOTIFY")
    # Expires 2 s, timer_interval 1 s, and a little slack for the machine.
    assert n.received_at - subscribed < 2 + 1 + 1.5
    assert rows(database, d) == []


@pytest.mark.parametrize("code", [481, 404, 408])
def test_notify_failure_ends_the_subscription(ua, presentity, database, code):
    ua.notify_answer = code
    _, d = ua.subscribe(presentity)
    ua.wait_notify(d.call_id)
    wait_until(lambda: rows(database, d) == [], timeout=5)
    ua.notify_answer = 200
    assert ua.resubscribe(d, 600).status == 481


def test_unanswered_notify_ends_the_subscription(ua, presentity, database):
    ua.notify_answer = None
    _, d = ua.subscribe(presentity)
    ua.wait_notify(d.call_id)
    assert rows(database, d)
    # notify_timeout is 3 s in these tests; the timer runs every second.
    # The unanswered NOTIFY is sent once more, and when that one goes
    # unanswered too, the subscription ends.
    # (UDP brings retransmissions too: look for the CSeq.)
    wait_until(lambda: [n for n in ua.notifies(d.call_id) if n.cseq == (2, "NOTIFY")],
               timeout=8)
    wait_until(lambda: rows(database, d) == [], timeout=8)


def test_answered_notify_keeps_the_subscription(ua, presentity, database):
    _, d = ua.subscribe(presentity)
    ua.wait_notify(d.call_id)
    time.sleep(4.5)  # past notify_timeout
    assert len(rows(database, d)) == 1
    assert database.query("SELECT last_notify_code FROM pa_subscription"
                          " WHERE call_id = %s", (d.call_id,)) == [(None,)]


def test_notify_answered_with_another_error_is_recorded_not_fatal(ua, presentity, database):
    ua.notify_answer = 500
    _, d = ua.subscribe(presentity)
    ua.wait_notify(d.call_id)
    wait_until(lambda: database.query("SELECT last_notify_code FROM pa_subscription"
                                      " WHERE call_id = %s", (d.call_id,)) == [(500,)])


# -- transports and malformed requests -------------------------------------

def test_subscription_over_tcp(kamailio, presentity):
    tcp = SipUA(kamailio.address, transport="tcp")
    try:
        r, d = tcp.subscribe(presentity)
        assert r.status == 200
        n = tcp.wait_notify(d.call_id)
        assert n.subscription_state()[0] == "active"
        assert n.get("via").startswith("SIP/2.0/TCP")
    finally:
        tcp.close()


def _raw_subscribe(ua, presentity, *, drop=(), extra=()):
    call_id = f"{rand()}@127.0.0.1"
    headers = {
        "Via": f"SIP/2.0/UDP 127.0.0.1:{ua.port};branch=z9hG4bK{rand()};rport",
        "Max-Forwards": "70", "From": f"<sip:alice@127.0.0.1>;tag={rand()}",
        "To": f"<{presentity}>", "Call-ID": call_id, "CSeq": "1 SUBSCRIBE",
        "Contact": f"<{ua.contact}>", "Event": "presence", "Expires": "60",
    }
    for name in drop:
        headers.pop(name)
    for name, value in extra:
        headers[name] = value
    text = f"SUBSCRIBE {presentity} SIP/2.0\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in headers.items()) + "Content-Length: 0\r\n\r\n"
    ua.send_raw(text.encode())
    return ua.wait_response(call_id, int(headers["CSeq"].split()[0]) if "CSeq" in headers else 1)


@pytest.mark.parametrize("drop, extra", [
    (("Contact",), ()),
    ((), (("Expires", "soon"),)),
    ((), (("From", "<sip:alice@127.0.0.1>"),)),
    ((), (("Contact", "<sip:a@127.0.0.1>, <sip:b@127.0.0.1>"),)),
    ((), (("Event", "presence;id=bad id"),)),
])
def test_malformed_subscribe_gets_400(ua, presentity, database, drop, extra):
    r = _raw_subscribe(ua, presentity, drop=drop, extra=extra)
    assert r.status == 400
    assert database.query("SELECT COUNT(*) FROM pa_subscription WHERE presentity = %s",
                          (presentity[4:],)) == [(0,)]


def test_request_uri_without_user_gets_404(ua):
    r, _ = ua.subscribe("sip:127.0.0.1")
    assert r.status == 404


def test_non_utf8_subscribe_is_refused_and_kamailio_lives(ua, presentity, kamailio):
    call_id = f"{rand()}@127.0.0.1"
    raw = (f"SUBSCRIBE {presentity} SIP/2.0\r\n"
           f"Via: SIP/2.0/UDP 127.0.0.1:{ua.port};branch=z9hG4bK{rand()};rport\r\n"
           f"From: <sip:alice@127.0.0.1>;tag=x1\r\nTo: <{presentity}>\r\n"
           f"Call-ID: {call_id}\r\nCSeq: 1 SUBSCRIBE\r\nContact: <{ua.contact}>\r\n"
           "Event: presence\r\n").encode() + b"Subject: caf\xe9\r\nContent-Length: 0\r\n\r\n"
    ua.send_raw(raw)
    assert ua.wait_response(call_id, 1).status == 400
    assert kamailio.alive()
    assert "Traceback" not in kamailio.log()
