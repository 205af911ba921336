"""The reg event package (RFC 3680) over SIP against real Kamailio and
MariaDB: the registration state of an AOR straight from the registrar's
bindings (usrloc), one <registration> per AOR, one <contact> per binding
with its event, and only the AOR itself may watch it (auth on)."""

import pytest
from lxml import etree

from conftest import settings
from harness import Kamailio
from helpers import wait_view
from sipua import SipUA, rand

REGINFO = "application/reginfo+xml"
NS = "urn:ietf:params:xml:ns:reginfo"
PASSWORD = "secret-pw"


def doc(notify):
    assert notify.get("content-type") == REGINFO
    return etree.fromstring(notify.body)


def registration(notify):
    [reg] = doc(notify).findall(f"{{{NS}}}registration")
    return reg


def contacts(notify):
    return sorted((c.find(f"{{{NS}}}uri").text, c.get("state"), c.get("event"))
                  for c in registration(notify).findall(f"{{{NS}}}contact"))


def table(notifies):
    """The watcher's view of the AOR's contacts after `notifies` (RFC 3680
    5.2): a full document replaces it, a partial one (its version the last
    one's plus one) changes the contacts it names."""
    by_id, last = {}, None
    for n in notifies:
        root = doc(n)
        version = int(root.get("version"))
        if root.get("state") == "full":
            by_id = {}
        else:
            assert last is not None and version == last + 1, (last, version)
        for c in registration(n).findall(f"{{{NS}}}contact"):
            by_id[c.get("id")] = (c.find(f"{{{NS}}}uri").text, c.get("state"), c.get("event"))
        last = version
    return sorted(by_id.values())


def sees(ua, call_id, *expected, timeout=5.0):
    """Wait until the watcher's view of the contacts is `expected`."""
    return wait_view(ua, call_id, table, sorted(expected), timeout)


@pytest.fixture
def phone(kamailio):
    u = SipUA(kamailio.address, user=f"r{rand(6)}")
    yield u
    u.close()


def test_an_aor_without_bindings_is_init(phone):
    r, d = phone.subscribe(phone.aor, event="reg", expires=None)
    assert r.status == 200
    assert r.get("expires") == "1800"   # RFC 3680's 3761 s, clamped by the test's maximum
    n = phone.wait_notify(d.call_id)
    root = doc(n)
    assert (root.get("version"), root.get("state")) == ("0", "full")
    reg = registration(n)
    assert (reg.get("aor"), reg.get("state")) == (phone.aor, "init")
    assert reg.get("id") and len(reg) == 0


def test_bindings_appear_refresh_and_leave(phone, kamailio):
    r, d = phone.subscribe(phone.aor, event="reg")
    phone.wait_notify(d.call_id)
    assert phone.register(expires=60, q="0.7").status == 200
    n = sees(phone, d.call_id, (phone.contact, "active", "registered"))
    reg = registration(n)
    assert reg.get("state") == "active"
    [c] = reg.findall(f"{{{NS}}}contact")
    assert c.get("q") == "0.7"
    assert 55 <= int(c.get("expires")) <= 60
    assert c.get("callid") and int(c.get("cseq")) >= 1
    first_id = c.get("id")
    # A second device of the same AOR.
    other = SipUA(kamailio.address, user=phone.user)
    try:
        assert other.register(expires=60).status == 200
        n = sees(phone, d.call_id, (phone.contact, "active", "registered"),
                                                     (other.contact, "active", "registered"))
        assert registration(n).get("id") == reg.get("id")
        # Partial state: only the contact that changed (RFC 3680 4.7.2).
        assert doc(n).get("state") == "partial"
        assert contacts(n) == [(other.contact, "active", "registered")]
        # Registered again: refreshed, shorter: shortened.
        assert phone.register(expires=60).status == 200
        sees(phone, d.call_id, (phone.contact, "active", "refreshed"),
                                                 (other.contact, "active", "registered"))
        assert phone.register(expires=30).status == 200
        n = sees(phone, d.call_id, (phone.contact, "active", "shortened"),
                                                     (other.contact, "active", "registered"))
        mine = [c for c in registration(n) if c.find(f"{{{NS}}}uri").text == phone.contact][0]
        assert mine.get("id") == first_id
        assert int(mine.get("expires")) <= 30
        # Unregistered: terminated once, then gone.
        assert other.register(expires=0).status == 200
        sees(phone, d.call_id, (phone.contact, "active", "shortened"),
                                                 (other.contact, "terminated", "unregistered"))
        sees(phone, d.call_id, (phone.contact, "active", "shortened"), timeout=8)
    finally:
        other.close()
    # The subscription's own versions; full state first, then partial.
    notifies = phone.notifies(d.call_id)
    versions = [int(doc(m).get("version")) for m in notifies]
    assert versions == list(range(len(versions)))
    assert doc(notifies[0]).get("state") == "full"
    assert "partial" in {doc(m).get("state") for m in notifies[1:]}


def test_an_expired_binding_is_reported_expired(phone):
    r, d = phone.subscribe(phone.aor, event="reg")
    phone.wait_notify(d.call_id)
    assert phone.register(expires=3).status == 200   # the test registrar's min_expires
    sees(phone, d.call_id, (phone.contact, "active", "registered"))
    n = sees(phone, d.call_id, (phone.contact, "terminated", "expired"), timeout=20)
    assert registration(n).get("state") == "init"


def test_publish_of_reg_gets_489(phone):
    r = phone.request("PUBLISH", phone.aor, [("Event", "reg"), ("Content-Type", REGINFO)],
                      b"<reginfo/>")
    assert r.status == 489


def test_only_the_aor_itself_may_watch_it(database):
    k = Kamailio(settings(database, auth="implicit")).start()
    owner, stranger = f"o{rand(6)}", f"s{rand(6)}"
    database.add_subscriber(owner, "127.0.0.1", PASSWORD)
    database.add_subscriber(stranger, "127.0.0.1", PASSWORD)
    a, b = SipUA(k.address, user=owner), SipUA(k.address, user=stranger)
    a.credentials, b.credentials = (owner, PASSWORD), (stranger, PASSWORD)
    try:
        r, d = a.subscribe(a.aor, event="reg")
        assert r.status == 200
        assert a.wait_notify(d.call_id).subscription_state()[0] == "active"
        r, _ = b.subscribe(a.aor, event="reg")
        assert r.status == 403
    finally:
        a.close()
        b.close()
        k.cleanup()
