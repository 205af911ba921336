"""The message-summary event package (RFC 3842, message-waiting lamps)
over SIP against real Kamailio and MariaDB: a summary right after the
subscription is accepted, Messages-Waiting: no when nothing is published,
the newest publication wins, the strict parser and the size limit."""

import time

import pytest

from conftest import settings
from harness import Kamailio
from helpers import publish_event, wait_answered
from sipua import SipUA

MWI = "application/simple-message-summary"
NOT_WAITING = b"Messages-Waiting: no\r\n"


def publish(ua, mailbox, body=b"", **kw):
    return publish_event(ua, mailbox, "message-summary", MWI, body, **kw)


@pytest.fixture
def mwi(ua, presentity):
    r, d = ua.subscribe(presentity, event="message-summary")
    assert r.status == 200
    ua.wait_notify(d.call_id)
    return d


def body_is(expected):
    return lambda n: n.body == expected


def test_a_mailbox_nobody_published_for_gets_messages_waiting_no(ua, presentity):
    r, d = ua.subscribe(presentity, event="message-summary", headers=[("Accept", MWI)])
    assert r.status == 200
    n = ua.wait_notify(d.call_id)
    assert n.get("event") == "message-summary"
    assert n.get("content-type") == MWI
    assert n.body == NOT_WAITING


def test_the_summary_comes_right_after_the_accept(ua, presentity):
    assert publish(ua, presentity, b"Messages-Waiting: yes\r\nVoice-Message: 2/8 (1/0)\r\n"
                   ).status == 200
    r, d = ua.subscribe(presentity, event="message-summary")
    n = ua.wait_notify(d.call_id)
    assert n.body == b"Messages-Waiting: yes\r\nVoice-Message: 2/8 (1/0)\r\n"


def test_lines_pass_as_published_and_changes_notify(ua, presentity, mwi, database):
    body = (b"Messages-Waiting:yes\r\nMessage-Account: sip:vm@example.com\r\n"
            b"Voice-Message: 4/8 (1/2)\r\nfax-message: 0/1\r\n")
    r = publish(ua, presentity, body)
    assert r.status == 200
    ua.wait_notify_until(mwi.call_id, body_is(body))
    wait_answered(database, mwi.call_id)
    # A bare LF is read; the NOTIFY's lines end in CRLF.  Message headers
    # after the blank line are not passed on.
    assert publish(ua, presentity, b"messages-waiting: no\nVoice-Message: 0/12\n\n"
                   b"To: <sip:x@y>\nSubject: hi\n", etag=r.get("sip-etag")).status == 200
    ua.wait_notify_until(mwi.call_id, body_is(b"messages-waiting: no\r\nVoice-Message: 0/12\r\n"))


def test_the_newest_publication_wins(ua, presentity, mwi, kamailio, database):
    vm1, vm2 = SipUA(kamailio.address, user="vm1"), SipUA(kamailio.address, user="vm2")
    try:
        yes = b"Messages-Waiting: yes\r\nVoice-Message: 1/0\r\n"
        r1 = publish(vm1, presentity, yes)
        ua.wait_notify_until(mwi.call_id, body_is(yes))
        wait_answered(database, mwi.call_id)
        publish(vm2, presentity, NOT_WAITING)
        ua.wait_notify_until(mwi.call_id, body_is(NOT_WAITING))
        wait_answered(database, mwi.call_id)
        # The older publication, modified, is the newest again (times are
        # kept to the second: within one, the one made last wins).
        time.sleep(1.1)
        yes2 = b"Messages-Waiting: yes\r\nVoice-Message: 2/0\r\n"
        assert publish(vm1, presentity, yes2, etag=r1.get("sip-etag")).status == 200
        ua.wait_notify_until(mwi.call_id, body_is(yes2))
    finally:
        vm1.close()
        vm2.close()


def test_removal_falls_back_to_messages_waiting_no(ua, presentity, mwi):
    r = publish(ua, presentity, b"Messages-Waiting: yes\r\n")
    ua.wait_notify_until(mwi.call_id, body_is(b"Messages-Waiting: yes\r\n"))
    assert publish(ua, presentity, etag=r.get("sip-etag"), expires=0).status == 200
    ua.wait_notify_until(mwi.call_id, body_is(NOT_WAITING))


@pytest.mark.parametrize("body", [
    b"Hello\r\n",
    b"Messages-Waiting: maybe\r\n",
    b"Voice-Message: 1/2\r\nMessages-Waiting: yes\r\n",
    b"Messages-Waiting: yes\r\nVoice-Message: 1\r\n",
    b"Messages-Waiting: yes\r\nSecret-Message: 1/2\r\n",
    b"Messages-Waiting: yes\r\nVoice-Message: 99999999999/0\r\n",
    b"Messages-Waiting: yes\r\nMessage-Account: <sip:vm@x>\r\n",
    "Messages-Waiting: yes\r\nVoice-Message: 1/2 ü\r\n".encode(),
    b"\r\nMessages-Waiting: yes\r\n",
])
def test_garbage_gets_400_and_changes_nothing(ua, presentity, mwi, database, body):
    assert publish(ua, presentity, body).status == 400
    assert ua.quiet(mwi.call_id, 0.3) == []
    assert database.query("SELECT etag FROM pa_publication WHERE presentity = %s",
                          (presentity[4:],)) == []


def test_size_limit_gets_413(ua, presentity):
    line = b"Voice-Message: 1/2\r\n"
    head = b"Messages-Waiting: yes\r\n"
    fits = head + line * ((49152 - len(head)) // len(line))
    assert publish(ua, presentity, fits).status == 200
    assert publish(ua, presentity, fits + line).status == 413


def test_other_content_type_gets_415(ua, presentity):
    r = ua.request("PUBLISH", presentity, [("Event", "message-summary"),
                                           ("Content-Type", "text/plain")], NOT_WAITING)
    assert r.status == 415
    assert r.get("accept") == MWI


def test_expiry_unsubscribe_and_fetch(ua, presentity, mwi):
    yes = b"Messages-Waiting: yes\r\nVoice-Message: 1/0\r\n"
    assert publish(ua, presentity, yes, expires=2).status == 200
    ua.wait_notify_until(mwi.call_id, body_is(yes))
    # The publication expires: back to no.
    ua.wait_notify_until(mwi.call_id, body_is(NOT_WAITING), timeout=8)
    assert publish(ua, presentity, yes).status == 200
    ua.wait_notify_until(mwi.call_id, body_is(yes))
    # A fetch: one NOTIFY with the summary, terminated.
    r, d = ua.subscribe(presentity, event="message-summary", expires=0)
    assert r.status == 200
    n = ua.wait_notify(d.call_id)
    assert (n.subscription_state()[0], n.body) == ("terminated", yes)
    # Unsubscribing: the final NOTIFY carries the summary (RFC 3842 4.1).
    assert ua.resubscribe(mwi, 0).status == 200
    n = ua.wait_notify_until(mwi.call_id, lambda m: m.subscription_state()[0] == "terminated")
    assert n.body == yes


def test_a_restart_and_a_second_node(database, presentity):
    a = Kamailio(settings(database)).start()
    b = Kamailio(settings(database)).start()
    phone, vm = SipUA(a.address), SipUA(b.address, user="voicemail")
    try:
        r, d = phone.subscribe(presentity, event="message-summary")
        phone.wait_notify(d.call_id)
        wait_answered(database, d.call_id)
        a.restart()
        yes = b"Messages-Waiting: yes\r\nVoice-Message: 5/0\r\n"
        assert publish(vm, presentity, yes).status == 200
        n = phone.wait_notify_until(d.call_id, body_is(yes))
        assert f":{b.port};branch=" in n.get("via")
        wait_answered(database, d.call_id)
        assert phone.resubscribe(d, 600).status == 200
        assert phone.wait_notify_until(d.call_id, body_is(yes), after=2).cseq[0] == 3
    finally:
        phone.close()
        vm.close()
        a.cleanup()
        b.cleanup()
