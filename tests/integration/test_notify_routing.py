"""NOTIFYs to watchers that gave an address of the registrar as their
Contact (Linphone gives its public GRUU), and to targets that resolve
nowhere; and Linphone's un-PUBLISH without Content-Length."""

import re

from helpers import pidf_body, wait_until
from sipua import SipUA, rand

DOMAIN = "example.org"   # not resolvable here (the sample runs with dns=no)


def register_with_instance(ua, aor, instance):
    """A REGISTER as Linphone sends it: +sip.instance, GRUU supported."""
    return ua.request("REGISTER", f"sip:{DOMAIN}", [
        ("Contact", f'<{ua.contact}>;+sip.instance="<{instance}>"'), ("Expires", "300"),
        ("Supported", "gruu")], to=f"<{aor}>", contact=False)


def test_a_notify_to_a_public_gruu_reaches_the_registered_device(kamailio):
    """Was: `failed to resolve "example.org"`, every NOTIFY lost while the
    subscription stayed."""
    user = f"blin{rand(6)}"
    aor = f"sip:{user}@{DOMAIN}"
    watcher = SipUA(kamailio.address, user=user)
    try:
        instance = f"urn:uuid:{rand(8)}-{rand(4)}"
        ok = register_with_instance(watcher, aor, instance)
        assert ok.status == 200
        gruu = re.search(r'pub-gruu="([^"]+)"', ok.get("contact")).group(1)
        assert gruu == f"{aor};gr={instance}"
        watcher.aor = aor
        r, d = watcher.subscribe(f"sip:alice{rand(6)}@{DOMAIN}", contact=gruu)
        assert r.status == 200
        n = watcher.wait_notify(d.call_id)
        assert n.subscription_state()[0] == "active"
    finally:
        watcher.close()


def test_a_notify_to_an_aor_reaches_its_registered_device(kamailio):
    user = f"carl{rand(6)}"
    aor = f"sip:{user}@{DOMAIN}"
    watcher = SipUA(kamailio.address, user=user)
    try:
        assert watcher.register(aor).status == 200
        watcher.aor = aor
        r, d = watcher.subscribe(f"sip:alice{rand(6)}@{DOMAIN}", contact=aor)
        assert r.status == 200
        assert watcher.wait_notify(d.call_id).subscription_state()[0] == "active"
    finally:
        watcher.close()


def test_a_target_that_resolves_nowhere_ends_the_subscription_at_once(kamailio, database, ua):
    """Was: the subscription stayed, and every change logged another
    failed NOTIFY."""
    presentity = f"sip:alice{rand(6)}@127.0.0.1"
    nowhere = f"sip:ghost{rand(6)}@{DOMAIN}"   # an AOR nobody registered
    r, d = ua.subscribe(presentity, contact=nowhere)
    assert r.status == 200
    wait_until(lambda: database.query("SELECT COUNT(*) FROM pa_subscription WHERE call_id = %s",
                                      (d.call_id,)) == [(0,)])
    publisher = SipUA(kamailio.address, user="alice")
    try:
        assert publisher.request("PUBLISH", presentity, [
            ("Event", "presence"), ("Content-Type", "application/pidf+xml")],
            pidf_body(presentity, "t", "open")).status == 200
    finally:
        publisher.close()
    wait_until(lambda: f"PUBLISH presentity={presentity[4:]}" in kamailio.log())
    failures = [line for line in kamailio.log().splitlines()
                if "could not be sent" in line and d.call_id in line]
    assert len(failures) == 1, failures


def test_linphones_unpublish_without_content_length_is_accepted(kamailio, ua, database):
    """Linphone removes its publication with Expires: 0 and no
    Content-Length over UDP (RFC 3261 18.3 allows it on UDP); native
    presence answers 400."""
    presentity = f"sip:blin{rand(6)}@127.0.0.1"
    r = ua.request("PUBLISH", presentity, [("Event", "presence"), ("Expires", "300"),
                                           ("Content-Type", "application/pidf+xml")],
                   pidf_body(presentity, "t", "open"))
    assert r.status == 200
    call_id = f"{rand()}@127.0.0.1"
    raw = ua.build("PUBLISH", presentity, call_id=call_id, from_=f"<{presentity}>;tag={rand()}",
                   to=f"<{presentity}>", cseq=1, headers=[
                       ("Event", "presence"), ("Expires", "0"),
                       ("SIP-If-Match", r.get("sip-etag"))])
    raw = re.sub(rb"Content-Length: 0\r\n", b"", raw)
    assert b"Content-Length" not in raw
    ua.send_raw(raw)
    assert ua.wait_response(call_id, 1).status == 200
    assert database.query("SELECT COUNT(*) FROM pa_publication WHERE presentity = %s",
                          (presentity[4:],)) == [(0,)]
