"""Input an open network sends through Kamailio (kamailio.cfg.sample) that
is legal but unusual, or crafted to confuse: Expires with leading zeros,
user parts with every character RFC 3261 allows, %-escaped control
characters, bare CRs and "!!" meant for our NOTIFY headers, numbers too
long for Python's int(), methods that are not UTF-8.  Each gets the
RFC's answer and at most one log line, never a traceback."""

import socket
import time

import pytest

from helpers import pidf_body, tuples, wait_until
from sipua import SipUA, rand

PIDF = "application/pidf+xml"
# Every character RFC 3261 25.1 allows in a user part: unreserved (alphanum
# and mark), user-unreserved, and escaped.
EVERY_USER_CHARACTER = "aZ09-_.!~*'()&=+$,;?/%25%40%c3%a9"
EVERY_USER_DECODED = "aZ09-_.!~*'()&=+$,;?/%@\u00e9"


def publish(ua, presentity, body=b"", headers=()):
    hdrs = [("Event", "presence")] + ([("Content-Type", PIDF)] if body else [])
    return ua.request("PUBLISH", presentity, hdrs + list(headers), body)


def raw_request(kamailio, method, ruri, headers: dict, body=b"", wait=2.0):
    """A request from a socket of its own, its bytes as given; the
    answer's status line, or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        fields = {
            "Via": f"SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{rand()};rport",
            "Max-Forwards": "70",
            "From": f"<sip:alice@127.0.0.1>;tag={rand()}",
            "To": f"<{ruri if isinstance(ruri, str) else ruri.decode()}>",
            "Call-ID": rand(16),
            "CSeq": f"1 {method if isinstance(method, str) else 'X'}",
            "Contact": f"<sip:alice@127.0.0.1:{port}>",
            "Event": "presence",
        }
        fields.update(headers)
        enc = (lambda v: v if isinstance(v, bytes) else v.encode())
        data = enc(method) + b" " + enc(ruri) + b" SIP/2.0\r\n" + b"".join(
            enc(k) + b": " + enc(v) + b"\r\n" for k, v in fields.items() if v is not None)
        if "Content-Length" not in fields:
            data += b"Content-Length: %d\r\n" % len(body)
        s.sendto(data + b"\r\n" + body, kamailio.address)
        s.settimeout(wait)
        try:
            answer = s.recv(65535)
        except socket.timeout:
            return None
        return answer.split(b"\r\n")[0].decode("utf-8", "replace")


def log_since(kamailio, mark: int) -> str:
    return kamailio.log()[mark:]


# -- item 9: delta-seconds with leading zeros --------------------------------

def test_publish_refresh_with_leading_zeros_in_expires_keeps_the_publication(ua, presentity,
                                                                            database):
    r = publish(ua, presentity, pidf_body(presentity, "t", "open"))
    assert r.status == 200
    refresh = publish(ua, presentity, headers=[("SIP-If-Match", r.get("sip-etag")),
                                               ("Expires", "000000000003600")])
    # 3600 granted as max_publish_expiration (1200), not 0 (a removal).
    assert refresh.status == 200 and refresh.get("expires") == "1200"
    assert database.query("SELECT COUNT(*) FROM pa_publication WHERE presentity = %s",
                          (presentity[4:],)) == [(1,)]
    _, d = ua.subscribe(presentity)
    assert tuples(ua.wait_notify(d.call_id).body) == [("t", "open")]


def test_subscribe_with_leading_zeros_in_expires_is_a_subscription_not_a_fetch(ua, presentity,
                                                                               database):
    r, d = ua.subscribe(presentity, headers=[], expires="000000000000600")
    assert r.status == 200 and r.get("expires") == "600"
    assert ua.wait_notify(d.call_id).subscription_state() == ("active", {"expires": "600"})
    assert database.query("SELECT COUNT(*) FROM pa_subscription WHERE call_id = %s",
                          (d.call_id,)) == [(1,)]


@pytest.mark.parametrize("expires, granted", [("0000000000", None), ("9" * 40, "1800")])
def test_expires_zeros_and_overflow(ua, presentity, expires, granted):
    r, d = ua.subscribe(presentity, expires=expires)
    assert r.status == 200
    state, _ = ua.wait_notify(d.call_id).subscription_state()
    assert (state, r.get("expires")) == (("terminated", "0") if granted is None
                                         else ("active", granted))


# -- item 10: the user part by RFC 3261's grammar -------------------------------

@pytest.mark.parametrize("user, decoded", [
    ("o'neil%22;--ab", "o'neil\";--ab"),
    (EVERY_USER_CHARACTER, EVERY_USER_DECODED),
])
def test_every_legal_user_part_keeps_its_user(kamailio, database, user, decoded):
    presentity = f"sip:{user}{rand(4)}@127.0.0.1"
    stored = decoded + presentity[4 + len(user):].split("@")[0] + "@127.0.0.1"
    publisher, watcher = SipUA(kamailio.address, user="pub"), SipUA(kamailio.address)
    # The watcher's own address has the same characters.
    watcher.aor = f"sip:{user}w@127.0.0.1"
    try:
        assert publish(publisher, presentity,
                       pidf_body("sip:x@127.0.0.1", "t", "open", note="legal")).status == 200
        r, d = watcher.subscribe(presentity)
        assert r.status == 200, r.start
        assert b"legal" in watcher.wait_notify(d.call_id).body
        assert database.query("SELECT presentity, watcher FROM pa_subscription"
                              " WHERE call_id = %s", (d.call_id,)) == \
            [(stored, decoded + "w@127.0.0.1")]
    finally:
        publisher.close()
        watcher.close()


# -- item 11: %-escaped control characters ------------------------------------

@pytest.mark.parametrize("escape", ["%00", "%01", "%0d%0a", "%7f", "%c2%85"])
def test_control_characters_in_addresses_get_400_and_are_not_stored(kamailio, database, escape):
    user = f"evil{rand(6)}"
    mark = len(kamailio.log())
    ua = SipUA(kamailio.address, user=f"{user}{escape}x")
    try:
        # In the Request-URI (presentity) and in From (watcher, publisher).
        r, _ = ua.subscribe(f"sip:{user}{escape}p@127.0.0.1")
        assert r.status == 400
        r, _ = ua.subscribe(f"sip:{user}ok@127.0.0.1")
        assert r.status == 400
        for target in (f"sip:{user}{escape}p@127.0.0.1", f"sip:{user}ok@127.0.0.1"):
            assert publish(ua, target, pidf_body("sip:x@y", "t", "open")).status == 400
    finally:
        ua.close()
    assert database.query("SELECT COUNT(*) FROM pa_subscription WHERE presentity LIKE %s"
                          " OR watcher LIKE %s", (f"{user}%", f"{user}%")) == [(0,)]
    assert database.query("SELECT COUNT(*) FROM pa_publication WHERE presentity LIKE %s",
                          (f"{user}%",)) == [(0,)]
    log = log_since(kamailio, mark)
    assert user in log
    assert not any(c in log for c in "\x00\x01\x7f\x85\r"), repr(log)


def test_a_watcher_with_a_control_character_cannot_stop_winfo_notifies(kamailio, presentity):
    """The victim watches its own watcher list; an attacker subscribing as
    sip:evil%00@... would make the victim's winfo NOTIFY unsendable."""
    victim = SipUA(kamailio.address, user=presentity[4:].split("@")[0])
    evil = SipUA(kamailio.address, user="evil%00")
    friend = SipUA(kamailio.address, user="friend")
    try:
        r, w = victim.subscribe(presentity, event="presence.winfo")
        assert r.status == 200
        victim.wait_notify(w.call_id)
        assert evil.subscribe(presentity)[0].status == 400
        assert friend.subscribe(presentity)[0].status == 200
        partial = victim.wait_notify(w.call_id, count=2)
        assert b"sip:friend@127.0.0.1" in partial.body
        # A refresh brings the whole list: it must still be sendable.
        assert victim.resubscribe(w, 600).status == 200
        full = victim.wait_notify(w.call_id, count=3)
        assert b'state="full"' in full.body and b"sip:friend@127.0.0.1" in full.body
        assert b"evil" not in full.body
    finally:
        for u in (victim, evil, friend):
            u.close()


# -- item 12: what would be copied into our NOTIFY headers ---------------------

@pytest.mark.parametrize("headers", [
    {"Record-Route": b"<sip:p1.example.com;lr>\rX-Injected: yes"},
    {"Contact": b"<sip:alice@127.0.0.1:5999>\rX-Injected: yes"},
    {"Event": "presence;id=a!!b"},
    {"Record-Route": "<sip:p!!1.example.com;lr>"},
    {"Record-Route": "<sip:proxy.example.com;lr>;x!!=1"},
    {"Contact": "<sip:alice!!@127.0.0.1:5999>"},
    {"Record-Route": "<sip:exa mple.com;lr>"},
    {"Record-Route": "<sip:proxy.example.com;lr>;a b"},
    {"Contact": "<sip:alice@127.0.0.1:5999;x=<y>>"},
    {"Contact": "<sip:al ice@127.0.0.1:5999>"},
], ids=["CR in Record-Route", "CR in Contact", "!! in Event id", "!! in Record-Route URI",
        "!! in Record-Route parameter", "!! in Contact", "space in Record-Route host",
        "bad Record-Route parameter", "bad Contact parameter", "space in Contact user"])
def test_what_would_be_copied_into_notify_headers_is_refused(kamailio, database, headers):
    user = f"copy{rand(6)}"
    status = raw_request(kamailio, "SUBSCRIBE", f"sip:{user}@127.0.0.1",
                         {"Expires": "60", **headers})
    assert status is not None and status.startswith("SIP/2.0 400"), status
    assert database.query("SELECT COUNT(*) FROM pa_subscription WHERE presentity = %s",
                          (f"{user}@127.0.0.1",)) == [(0,)]


def test_a_legal_record_route_and_contact_still_work(kamailio, database):
    user = f"legal{rand(6)}"
    status = raw_request(kamailio, "SUBSCRIBE", f"sip:{user}@127.0.0.1", {
        "Expires": "60", "Event": "presence;id=a.b-c",
        "Record-Route": '<sip:127.0.0.1:5999;lr;transport=udp>;x="q u", <sip:[::1];lr>',
        "Contact": '"A" <sip:alice@127.0.0.1:5999;transport=udp>;+sip.instance="<urn:x>"'})
    assert status == "SIP/2.0 200 OK"


# -- item 14: exceptions driven by input ------------------------------------------

def test_a_5000_digit_content_length_is_read_without_traceback(kamailio):
    mark = len(kamailio.log())
    # Kamailio's own parser refuses this one before any route runs (and
    # cannot build an answer to a request it cannot parse).
    status = raw_request(kamailio, "PUBLISH", f"sip:cl{rand(6)}@127.0.0.1",
                         {"Content-Length": "1" * 5000}, wait=1.0)
    assert status in (None, "SIP/2.0 400 Bad Content-Length"), status
    # Leading zeros are legal (1*DIGIT), however many, and Kamailio passes
    # them on: 5000 digits Python's int() refuses as such.
    presentity = f"sip:cl{rand(6)}@127.0.0.1"
    body = pidf_body(presentity, "t", "open")
    status = raw_request(kamailio, "PUBLISH", presentity,
                         {"Content-Length": "0" * 4990 + str(len(body)),
                          "Content-Type": PIDF}, body=body)
    assert status == "SIP/2.0 200 OK", status
    time.sleep(0.3)
    log = log_since(kamailio, mark)
    assert "Traceback" not in log and "answer=500" not in log, log


@pytest.mark.parametrize("where", ["method", "From domain", "To domain"])
def test_bytes_that_are_not_utf8_get_400_and_one_log_line(kamailio, where):
    mark = len(kamailio.log())
    method, headers = b"SUBSCRIBE", {}
    if where == "method":
        method = b"SUB\xffSCRIBE"
    elif where == "From domain":
        headers = {"From": b"<sip:alice@ex\xffample.org>;tag=1"}
    else:
        headers = {"To": b"<sip:bob@ex\xffample.org>"}
    status = raw_request(kamailio, method, b"sip:bob@127.0.0.1", headers)
    assert status is not None and status.startswith("SIP/2.0 400"), status
    log = wait_until(lambda: log_since(kamailio, mark) or None, timeout=2) \
        if where == "method" else log_since(kamailio, mark)
    assert "Traceback" not in log, log
    assert len([line for line in log.splitlines() if line.strip()]) <= 1, log
