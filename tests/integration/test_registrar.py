"""The registrar domain against real Kamailio (registrar, usrloc in MySQL)
and MariaDB: presence that follows SIP registrations, no PUBLISH needed."""

import os
import shutil
import subprocess
import time

import pytest

from conftest import settings
from harness import ROOT, Kamailio, free_port
from helpers import PIDF_NS, pidf, pidf_body, tuples, wait_until
from sipua import SipUA


def contacts(body: bytes) -> dict[str, tuple[str, str]]:
    """contact URI -> (basic status, priority) for every tuple."""
    return {t.findtext(f"{{{PIDF_NS}}}contact"): (
        t.findtext(f"{{{PIDF_NS}}}status/{{{PIDF_NS}}}basic"),
        t.find(f"{{{PIDF_NS}}}contact").get("priority"))
        for t in pidf(body).findall(f"{{{PIDF_NS}}}tuple")
        if t.find(f"{{{PIDF_NS}}}contact") is not None}


@pytest.fixture
def devices(kamailio, presentity):
    """Devices of the presentity's user, each with a contact of its own."""
    made = []

    def make():
        made.append(SipUA(kamailio.address, user=presentity[4:].split("@")[0]))
        return made[-1]
    yield make
    for dev in made:
        dev.close()


@pytest.fixture
def phone(devices):
    return devices()


@pytest.fixture
def laptop(devices):
    return devices()


def watch(ua, presentity):
    _, d = ua.subscribe(presentity)
    first = ua.wait_notify(d.call_id)
    return d, first


def test_register_shows_the_presentity_open_with_its_contact(ua, presentity, phone):
    d, first = watch(ua, presentity)
    assert tuples(first.body) == [("pa-closed", "closed")]
    r = phone.register(presentity, expires=300)
    assert r.status == 200
    n = ua.wait_notify(d.call_id, 2)
    # No q-value in the REGISTER: default_priority_percentage (50) / 100.
    assert contacts(n.body) == {phone.contact: ("open", "0.5")}


def test_q_value_becomes_the_priority(ua, presentity, phone):
    d, _ = watch(ua, presentity)
    phone.register(presentity, q="0.8")
    assert contacts(ua.wait_notify(d.call_id, 2).body) == {phone.contact: ("open", "0.8")}


def test_second_device_adds_a_tuple(ua, presentity, phone, laptop):
    d, _ = watch(ua, presentity)
    phone.register(presentity)
    ua.wait_notify(d.call_id, 2)
    laptop.register(presentity, q="0.3")
    assert contacts(ua.wait_notify(d.call_id, 3).body) == {
        phone.contact: ("open", "0.5"), laptop.contact: ("open", "0.3")}


def test_unregister_closes_the_tuple_then_it_goes_away(ua, presentity, phone, laptop):
    d, _ = watch(ua, presentity)
    phone.register(presentity)
    ua.wait_notify(d.call_id, 2)   # each change after the NOTIFY before (else they come together)
    laptop.register(presentity)
    ua.wait_notify(d.call_id, 3)
    assert phone.register(presentity, expires=0).status == 200
    closed = ua.wait_notify(d.call_id, 4)
    assert contacts(closed.body) == {phone.contact: ("closed", "0.5"),
                                     laptop.contact: ("open", "0.5")}
    gone = ua.wait_notify(d.call_id, 5, timeout=5)  # timer_interval is 1 s here
    assert contacts(gone.body) == {laptop.contact: ("open", "0.5")}


def test_star_removes_every_binding(ua, presentity, phone, laptop):
    d, _ = watch(ua, presentity)
    phone.register(presentity)
    ua.wait_notify(d.call_id, 2)   # each change after the NOTIFY before (else they come together)
    laptop.register(presentity)
    ua.wait_notify(d.call_id, 3)
    assert phone.register(presentity, expires=0, contact="*").status == 200
    n = ua.wait_notify(d.call_id, 4)
    assert contacts(n.body) == {phone.contact: ("closed", "0.5"),
                                laptop.contact: ("closed", "0.5")}
    assert tuples(ua.wait_notify(d.call_id, 5, timeout=5).body) == [("pa-closed", "closed")]


def test_replaced_contact_closes_the_old_tuple(kamailio, ua, presentity, phone):
    d, _ = watch(ua, presentity)
    phone.register(presentity)
    ua.wait_notify(d.call_id, 2)
    moved = phone.contact.replace("127.0.0.1", "127.0.0.2")
    phone.register(presentity, expires=0)
    phone.register(presentity, contact=moved)
    # The two changes come one by one or together: the last NOTIFY.
    last = wait_until(lambda: (lambda n: n if moved in contacts(n.body) else None)(
        ua.notifies(d.call_id)[-1]))
    assert contacts(last.body)[moved] == ("open", "0.5")
    assert contacts(last.body).get(phone.contact, ("closed",))[0] == "closed"


def test_expiry_with_no_traffic_closes_within_one_timer_interval(ua, presentity, phone):
    d, _ = watch(ua, presentity)
    phone.register(presentity, expires=2)
    ua.wait_notify(d.call_id, 2)
    registered = time.monotonic()
    closed = ua.wait_notify(d.call_id, 3, timeout=8)
    assert contacts(closed.body) == {phone.contact: ("closed", "0.5")}
    # Expires 2 s, timer_interval 1 s, and a little slack for the machine.
    assert closed.received_at - registered < 2 + 1 + 1.5


def test_refresh_that_changes_nothing_notifies_nobody(ua, presentity, phone, database):
    d, _ = watch(ua, presentity)
    phone.register(presentity, expires=60)
    ua.wait_notify(d.call_id, 2)
    [(before,)] = database.query("SELECT expires_at FROM pa_publication WHERE presentity = %s"
                                 " AND event = 'presence'",
                                 (presentity[4:],))
    time.sleep(1.1)
    assert phone.register(presentity, expires=120).status == 200
    assert ua.quiet(d.call_id, 1.5) == []
    [(after,)] = database.query("SELECT expires_at FROM pa_publication WHERE presentity = %s"
                                " AND event = 'presence'",
                                (presentity[4:],))
    assert after > before


def publish(device, presentity, tuple_id, basic, **kw):
    return device.request("PUBLISH", presentity, [("Event", "presence"),
                                                  ("Content-Type", "application/pidf+xml")],
                          pidf_body(presentity, tuple_id, basic, **kw))


def test_registrations_aggregate_with_publications_of_other_devices(ua, presentity, phone,
                                                                     laptop):
    d, _ = watch(ua, presentity)
    phone.register(presentity)
    ua.wait_notify(d.call_id, 2)
    assert publish(laptop, presentity, "softphone", "open", note="In a meeting").status == 200
    n = ua.wait_notify(d.call_id, 3)
    # Published state first: a phone that reads one tuple shows the note.
    ids = [t for t, _ in tuples(n.body)]
    assert ids[0] == "softphone" and ids[1].startswith("reg-") and len(ids) == 2
    assert pidf(n.body).findtext(f"{{{PIDF_NS}}}note") == "In a meeting"


def test_a_registered_device_that_publishes_speaks_for_itself(ua, presentity, phone):
    """Was: the registration's open tuple stayed first beside the device's
    own closed one, and phones that read one tuple showed it online."""
    d, _ = watch(ua, presentity)
    phone.register(presentity)
    ua.wait_notify_until(d.call_id, lambda n: phone.contact in contacts(n.body))
    assert publish(phone, presentity, "softphone", "closed", note="gone home").status == 200
    n = ua.wait_notify_until(d.call_id, lambda n: tuples(n.body)[0][0] == "softphone")
    assert tuples(n.body) == [("softphone", "closed")]
    # Its publication ends: the registration speaks again.
    etag = publish(phone, presentity, "softphone", "open").get("sip-etag")
    seen = len(ua.notifies(d.call_id))
    assert phone.request("PUBLISH", presentity, [("Event", "presence"), ("Expires", "0"),
                                                 ("SIP-If-Match", etag)]).status == 200
    n = ua.wait_notify_until(d.call_id, lambda n: "softphone" not in dict(tuples(n.body)),
                             after=seen)
    assert contacts(n.body) == {phone.contact: ("open", "0.5")}


def test_a_device_registering_after_it_published_is_superseded_too(ua, presentity, phone,
                                                                     database):
    """The REGISTER stored after the PUBLISH (a phone that publishes on its
    200 races its own registration) gives the same document."""
    d, _ = watch(ua, presentity)
    assert publish(phone, presentity, "softphone", "open", note="here").status == 200
    published = ua.wait_notify(d.call_id, 2)
    assert phone.register(presentity).status == 200
    assert database.query("SELECT COUNT(*) FROM pa_publication WHERE presentity = %s"
                          " AND origin = 'registrar'", (presentity[4:],)) == [(1,)]
    assert ua.quiet(d.call_id, 1.5) == []
    [(document,)] = database.query("SELECT body FROM pa_document WHERE presentity = %s"
                                   " AND event = 'presence'", (presentity[4:],))
    assert document == published.body


@pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp (Debian sip-tester) missing")
def test_an_independent_client_registers(kamailio, ua, presentity, tmp_path):
    """sipp, not our UA, registers the phone."""
    d, _ = watch(ua, presentity)
    user = presentity[4:].split("@")[0]
    result = subprocess.run(
        ["sipp", "-sf", os.path.join(ROOT, "tests", "sipp", "register.xml"), "-s", user,
         "-m", "1", "-i", "127.0.0.1", "-p", str(free_port()), "-timeout", "10s", "-timeout_error",
         "-nostdin", f"127.0.0.1:{kamailio.port}"],
        cwd=tmp_path, capture_output=True, timeout=30)
    assert result.returncode == 0, result.stderr[-2000:]
    n = ua.wait_notify(d.call_id, 2)
    [(contact, (basic, priority))] = contacts(n.body).items()
    assert contact.startswith(f"sip:{user}@127.0.0.1:") and (basic, priority) == ("open", "0.7")


def test_usrloc_contact_expired_event_reaches_the_plugin(database, presentity):
    """With the plugin's own sweep far away (timer_interval 30 s), only
    registrar's usrloc:contact-expired event can close the tuple in time."""
    k = Kamailio(settings(database, timer_interval=30), usrloc_timer=1).start()
    watcher, dev = SipUA(k.address), SipUA(k.address, user=presentity[4:].split("@")[0])
    try:
        time.sleep(1.2)  # past the plugin's first sweep at start
        d, _ = watch(watcher, presentity)
        dev.register(presentity, expires=2)
        watcher.wait_notify(d.call_id, 2)
        closed = watcher.wait_notify(d.call_id, 3, timeout=8)
        assert contacts(closed.body) == {dev.contact: ("closed", "0.5")}
    finally:
        watcher.close()
        dev.close()
        k.cleanup()
