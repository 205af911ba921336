"""A real phone's voicemail lamp: pjsua2 (PyPI pjsua2-python) subscribes to
its own message-summary (AccountMwiConfig) against kamailio.cfg.sample;
its onMwiInfo callback receives the summaries a voicemail server
PUBLISHes.

BLF (RFC 4235 dialog) cannot be tested with this client: the
pjsua2-python 2.15.1 wheel's binding has no BuddyConfig.subscribe_dlg_event
and no Buddy dialog-event callback (only uri/subscribe and presence
callbacks are wrapped; test_pjsua2_wheel_lacks_dialog_event_subscription
checks this, and fails, to be turned into a BLF test, once a wheel has
them)."""

import pjsua2
import pytest

from phones import Pjsua
from sipua import SipUA, rand

MWI = "application/simple-message-summary"


@pytest.fixture(params=["udp", "tcp"])
def phone(kamailio, request):
    p = Pjsua(request.param, kamailio.port)
    yield p
    p.close()


def publish(ua, mailbox, body, etag=None):
    headers = [("Event", "message-summary"), ("Content-Type", MWI)]
    if etag:
        headers.append(("SIP-If-Match", etag))
    return ua.request("PUBLISH", mailbox, headers, body)


def test_the_voicemail_lamp_follows_publications(phone, kamailio):
    user = f"mbox{rand(6)}"
    mailbox = f"sip:{user}@127.0.0.1"
    assert phone.account("m", user, publish=False, mwi=True) == 200
    # A summary is due as soon as the subscription is accepted.
    first = phone.mwi("m", "Messages-Waiting: no")
    assert first["body"] == "Messages-Waiting: no\r\n"
    # The subscription's state when the NOTIFY came (accepted: its 200 was
    # read first), never pending or terminated.
    assert first["state"] in ("accepted", "active")
    vm = SipUA(kamailio.address, user="voicemail")
    try:
        r = publish(vm, mailbox, b"Messages-Waiting: yes\r\nVoice-Message: 3/7 (1/0)\r\n")
        assert r.status == 200
        got = phone.mwi("m", "Voice-Message: 3/7")
        assert got["body"] == "Messages-Waiting: yes\r\nVoice-Message: 3/7 (1/0)\r\n"
        assert publish(vm, mailbox, b"Messages-Waiting: no\r\nVoice-Message: 0/10\r\n",
                       etag=r.get("sip-etag")).status == 200
        assert phone.mwi("m", "0/10")["body"] == "Messages-Waiting: no\r\nVoice-Message: 0/10\r\n"
    finally:
        vm.close()


def test_pjsua2_wheel_lacks_dialog_event_subscription():
    """Why there is no BLF test with pjsua2: the wheel wraps none of pjsip
    2.13's dialog-event API."""
    assert not hasattr(pjsua2.BuddyConfig(), "subscribe_dlg_event")
    assert not hasattr(pjsua2.Buddy, "subscribeDlgEvent")
    assert not hasattr(pjsua2.Buddy, "onBuddyDlgEventState")
