"""PUBLISH (RFC 3903) against real Kamailio and MariaDB: every row of the
PUBLISH table, aggregation of several devices, every document format,
hostile documents, and concurrent publishers."""

import threading
import time

import pytest
from lxml import etree

from helpers import PIDF_NS, pidf, pidf_body, publish_event, tuples, wait_until
from sipua import SipUA

PIDF = "application/pidf+xml"
DM = "urn:ietf:params:xml:ns:pidf:data-model"
RPID = "urn:ietf:params:xml:ns:pidf:rpid"


def publish(ua, presentity, body=b"", *, etag=None, expires=None, content_type=PIDF,
            event="presence", headers=(), timeout=5.0):
    return publish_event(ua, presentity, event, content_type, body, etag=etag,
                         expires=expires, headers=headers, timeout=timeout)


def publications(database, presentity):
    return database.query("SELECT etag FROM pa_publication WHERE presentity = %s",
                          (presentity[4:],))


@pytest.fixture
def watched(ua, presentity):
    """A watcher subscribed to the presentity, past its first NOTIFY."""
    _, d = ua.subscribe(presentity)
    ua.wait_notify(d.call_id)
    return d


# -- the PUBLISH table -----------------------------------------------------

@pytest.mark.parametrize("event", [None, "conference", "presence.winfo", "reg"])
def test_missing_or_unserved_event_gets_489(ua, presentity, event):
    r = publish(ua, presentity, pidf_body(presentity, "t", "open"), event=event)
    assert r.status == 489
    assert r.get("allow-events") == "presence, dialog, message-summary"


def test_initial_publish_without_body_gets_400(ua, presentity):
    assert publish(ua, presentity).status == 400


def test_other_content_type_gets_415_with_accept(ua, presentity, database):
    r = publish(ua, presentity, b"I am here", content_type="text/plain")
    assert r.status == 415
    assert r.get("accept") == "application/pidf+xml, application/cpim-pidf+xml"
    assert publications(database, presentity) == []


@pytest.mark.parametrize("body", [
    b"<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='sip:x@y'><tuple",
    b"<foo xmlns='urn:x'/>",
    b"not xml at all",
])
def test_bad_documents_get_400_and_leave_state_untouched(ua, presentity, database, watched, body):
    r = publish(ua, presentity, pidf_body(presentity, "t1", "open"))
    assert r.status == 200
    ua.wait_notify(watched.call_id, 2)
    before = database.query("SELECT body, version FROM pa_document WHERE presentity = %s",
                            (presentity[4:],))
    assert publish(ua, presentity, body).status == 400
    assert publish(ua, presentity, body, etag=r.get("sip-etag")).status == 400
    assert ua.quiet(watched.call_id, 1.0) == []
    assert database.query("SELECT body, version FROM pa_document WHERE presentity = %s",
                          (presentity[4:],)) == before
    assert publications(database, presentity) == [(r.get("sip-etag"),)]


def test_unknown_sip_if_match_gets_412(ua, presentity):
    assert publish(ua, presentity, etag="no-such-etag", expires=60).status == 412
    assert publish(ua, presentity, pidf_body(presentity, "t", "open"), etag="nope").status == 412
    assert publish(ua, presentity, etag="nope", expires=0).status == 412


def test_expired_sip_if_match_gets_412(ua, presentity):
    r = publish(ua, presentity, pidf_body(presentity, "t", "open"), expires=2)
    assert r.status == 200
    time.sleep(2.5)
    assert publish(ua, presentity, etag=r.get("sip-etag"), expires=60).status == 412


def test_publish_gets_200_with_entity_tag_and_clamped_expires(ua, presentity, database):
    r = publish(ua, presentity, pidf_body(presentity, "t", "open"), expires=99999)
    assert r.status == 200
    assert r.get("expires") == "1200"
    assert r.get("sip-etag")
    [(expires_at,)] = database.query("SELECT expires_at FROM pa_publication WHERE etag = %s",
                                     (r.get("sip-etag"),))
    assert abs(expires_at - (time.time() + 1200)) < 5


def test_publish_without_expires_gets_default(ua, presentity):
    r = publish(ua, presentity, pidf_body(presentity, "t", "open"))
    assert r.get("expires") == "900"


def test_expires_below_minimum_gets_423(ua, presentity):
    r = publish(ua, presentity, pidf_body(presentity, "t", "open"), expires=1)
    assert r.status == 423 and r.get("min-expires") == "2"


def test_refresh_gets_a_new_entity_tag_and_notifies_nobody(ua, presentity, watched, database):
    first = publish(ua, presentity, pidf_body(presentity, "t", "open"), expires=60)
    ua.wait_notify(watched.call_id, 2)
    refreshed = publish(ua, presentity, etag=first.get("sip-etag"), expires=600)
    assert refreshed.status == 200
    assert refreshed.get("expires") == "600"
    assert refreshed.get("sip-etag") not in (None, first.get("sip-etag"))
    assert ua.quiet(watched.call_id, 1.0) == []
    # The old entity-tag is gone (RFC 3903 4.1: a new one per refresh).
    assert publish(ua, presentity, etag=first.get("sip-etag"), expires=60).status == 412
    assert publications(database, presentity) == [(refreshed.get("sip-etag"),)]


def test_modify_replaces_the_publication_and_notifies(ua, presentity, watched):
    first = publish(ua, presentity, pidf_body(presentity, "t", "open", note="here"))
    assert tuples(ua.wait_notify(watched.call_id, 2).body) == [("t", "open")]
    second = publish(ua, presentity, pidf_body(presentity, "t", "closed", note="gone"),
                     etag=first.get("sip-etag"))
    assert second.status == 200
    n = ua.wait_notify(watched.call_id, 3)
    assert tuples(n.body) == [("t", "closed")]
    assert pidf(n.body).findtext(f"{{{PIDF_NS}}}note") == "gone"


def test_remove_notifies_the_remaining_state(ua, presentity, watched, database):
    r = publish(ua, presentity, pidf_body(presentity, "t", "open"))
    ua.wait_notify(watched.call_id, 2)
    removed = publish(ua, presentity, etag=r.get("sip-etag"), expires=0)
    assert removed.status == 200 and removed.get("expires") == "0"
    assert tuples(ua.wait_notify(watched.call_id, 3).body) == [("pa-closed", "closed")]
    assert publications(database, presentity) == []


def test_publication_expiry_notifies_watchers(ua, presentity, watched, database):
    assert publish(ua, presentity, pidf_body(presentity, "t", "open"), expires=2).status == 200
    assert tuples(ua.wait_notify(watched.call_id, 2).body) == [("t", "open")]
    n = ua.wait_notify(watched.call_id, 3, timeout=6)
    assert tuples(n.body) == [("pa-closed", "closed")]
    assert publications(database, presentity) == []


def test_cpim_pidf_is_accepted(ua, presentity, watched):
    r = publish(ua, presentity, pidf_body(presentity, "t", "open"),
                content_type="application/cpim-pidf+xml")
    assert r.status == 200
    assert tuples(ua.wait_notify(watched.call_id, 2).body) == [("t", "open")]


# -- aggregation -------------------------------------------------------------

def device_body(presentity, n, basic, activity):
    person = (f'<dm:person xmlns:dm="{DM}" xmlns:rpid="{RPID}" id="p{n}">'
              f"<rpid:activities><rpid:{activity}/></rpid:activities></dm:person>")
    return pidf_body(presentity, "tuple1", basic, contact=f"sip:dev{n}@10.0.0.{n}",
                     note=f"device {n}", extra=person)


@pytest.mark.parametrize("devices", [2, 3])
def test_devices_aggregate_into_one_document(kamailio, ua, presentity, watched, devices):
    uas = [SipUA(kamailio.address, user=f"dev{n}") for n in range(devices)]
    try:
        activities = ["busy", "on-the-phone", "away"]
        for n, dev in enumerate(uas):
            r = publish(dev, presentity, device_body(presentity, n, "open", activities[n]))
            assert r.status == 200
        # The publications come in a burst: the watcher may see them one by
        # one or together; the last NOTIFY has them all.
        n = wait_until(lambda: (lambda last: last if len(tuples(last.body)) == devices else None)(
            ua.notifies(watched.call_id)[-1]))
        root = pidf(n.body)
        # One tuple per device, ids unique although every device used "tuple1".
        ids = [t.get("id") for t in root.findall(f"{{{PIDF_NS}}}tuple")]
        assert len(ids) == devices == len(set(ids))
        assert sorted(t.findtext(f"{{{PIDF_NS}}}contact") for t in
                      root.findall(f"{{{PIDF_NS}}}tuple")) == \
            sorted(f"sip:dev{i}@10.0.0.{i}" for i in range(devices))
        assert sorted(x.text for x in root.findall(f"{{{PIDF_NS}}}note")) == \
            sorted(f"device {i}" for i in range(devices))
        # RPID person elements kept with their namespaces.
        found = {etree.QName(a[0]).localname
                 for a in root.iterfind(f"{{{DM}}}person/{{{RPID}}}activities")}
        assert found == set(activities[:devices])
    finally:
        for dev in uas:
            dev.close()


def test_tuple_without_priority_gets_default_priority(ua, presentity, watched):
    body = (f'<presence xmlns="{PIDF_NS}" entity="{presentity}">'
            '<tuple id="a"><status><basic>open</basic></status><contact>sip:a@1.1.1.1</contact></tuple>'
            '<tuple id="b"><status><basic>open</basic></status>'
            '<contact priority="0.9">sip:b@1.1.1.1</contact></tuple></presence>').encode()
    assert publish(ua, presentity, body).status == 200
    root = pidf(ua.wait_notify(watched.call_id, 2).body)
    assert {t.get("id"): t.find(f"{{{PIDF_NS}}}contact").get("priority")
            for t in root.findall(f"{{{PIDF_NS}}}tuple")} == {"a": "0.5", "b": "0.9"}


def test_republishing_without_entity_tag_supersedes_the_same_device(kamailio, ua, presentity,
                                                                     watched, database):
    """The entity-tag race: the device lost its entity-tag and publishes
    afresh; its old publication must not linger beside the new one."""
    other = SipUA(kamailio.address, user="laptop")
    try:
        assert publish(other, presentity, pidf_body(presentity, "laptop", "open")).status == 200
        first = publish(ua, presentity, pidf_body(presentity, "phone", "open"))
        stale = publish(ua, presentity, pidf_body(presentity, "phone", "closed"),
                        etag="lost-" + first.get("sip-etag"))
        assert stale.status == 412
        again = publish(ua, presentity, pidf_body(presentity, "phone", "closed"))
        assert again.status == 200
        etags = {e for (e,) in publications(database, presentity)}
        assert len(etags) == 2 and again.get("sip-etag") in etags
        assert first.get("sip-etag") not in etags
        # The last NOTIFY (the changes may come one by one or together).
        wait_until(lambda: sorted(tuples(ua.notifies(watched.call_id)[-1].body))
                   == [("laptop", "open"), ("phone", "closed")])
    finally:
        other.close()


# -- formats -------------------------------------------------------------------

@pytest.mark.parametrize("accept, content_type", [
    ("application/pidf+xml", "application/pidf+xml"),
    ("application/cpim-pidf+xml", "application/cpim-pidf+xml"),
    ("application/xpidf+xml", "application/xpidf+xml"),
    ("application/lpidf+xml", "text/lpidf"),
])
def test_each_format_is_served_from_the_aggregate(ua, presentity, accept, content_type):
    publish(ua, presentity, pidf_body(presentity, "t1", "open", contact="sip:bob@10.1.1.1",
                                      priority="0.7"))
    r, d = ua.subscribe(presentity, headers=[("Accept", accept)])
    assert r.status == 200
    n = ua.wait_notify(d.call_id)
    assert n.get("content-type") == content_type
    body = n.body.decode()
    if content_type in ("application/pidf+xml", "application/cpim-pidf+xml"):
        assert tuples(n.body) == [("t1", "open")]
    elif content_type == "application/xpidf+xml":
        root = etree.fromstring(n.body, etree.XMLParser(load_dtd=False, no_network=True,
                                                        resolve_entities=False))
        assert root.find("presentity").get("uri") == f"{presentity};method=SUBSCRIBE"
        address = root.find("atom/address")
        assert (address.get("priority"), address.find("status").get("status")) == ("0.7", "open")
    else:
        assert body.split("\r\n")[:2] == [f"To: <{presentity}>", "Contact: <sip:bob@10.1.1.1>;q=1"]


# -- hostile documents -----------------------------------------------------------

BOMB = (b'<?xml version="1.0"?><!DOCTYPE presence [<!ENTITY a0 "ha">'
        + b"".join(b'<!ENTITY a%d "%s">' % (i + 1, b"&a%d;" % i * 10) for i in range(9))
        + b']><presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:x@y">'
        b'<tuple id="t"><status><basic>open</basic></status></tuple><note>&a9;</note></presence>')
XXE = (b'<?xml version="1.0"?><!DOCTYPE presence [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
       b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:x@y">'
       b'<tuple id="t"><status><basic>open</basic></status></tuple><note>&x;</note></presence>')
# 10 000 nested elements: the opening tags alone fill a 30 KB datagram.
DEEP = b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:x@y">' + b"<a>" * 10000


@pytest.mark.parametrize("body", [BOMB, XXE, DEEP], ids=["entity-expansion", "external-entity",
                                                        "deep-nesting"])
def test_hostile_documents_are_refused(kamailio, presentity, database, watched, ua, body):
    r = publish(ua, presentity, body)
    assert r.status == 400
    assert publications(database, presentity) == []
    assert ua.quiet(watched.call_id, 0.5) == []
    assert b"root:" not in b"".join(n.body for n in ua.notifies(watched.call_id))
    assert kamailio.alive()


def test_megabyte_body_over_tcp_is_refused(kamailio, presentity, database):
    body = pidf_body(presentity, "t", "open", note="x" * (1024 * 1024))
    tcp = SipUA(kamailio.address, transport="tcp")
    try:
        try:
            status = publish(tcp, presentity, body, timeout=5).status
        except TimeoutError:
            status = None  # Kamailio closed the connection: also a refusal
    finally:
        tcp.close()
    assert status in (None, 400, 413, 513)
    assert publications(database, presentity) == []
    assert kamailio.alive()
    assert "Traceback" not in kamailio.log()


# -- concurrency -----------------------------------------------------------------

def test_concurrent_publishers_lose_no_update_and_leave_no_duplicate(kamailio, presentity,
                                                                     database, ua, watched):
    devices, steps = 8, 6
    errors = []

    def device(n):
        dev = SipUA(kamailio.address, user=f"d{n}")
        try:
            r = publish(dev, presentity, pidf_body(presentity, f"d{n}", "open", note=f"d{n}-0"),
                        timeout=10)
            assert r.status == 200, r.status
            for step in range(1, steps):
                r = publish(dev, presentity,
                            pidf_body(presentity, f"d{n}", "open", note=f"d{n}-{step}"),
                            etag=r.get("sip-etag"), timeout=10)
                assert r.status == 200, r.status
        except Exception as e:  # reported below, with the thread's context
            errors.append(f"device {n}: {e!r}")
        finally:
            dev.close()

    threads = [threading.Thread(target=device, args=(n,)) for n in range(devices)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len(publications(database, presentity)) == devices

    # The document holds every device's last state, once.
    expected = sorted(f"d{n}-{steps - 1}" for n in range(devices))
    [(body,)] = database.query("SELECT body FROM pa_document WHERE presentity = %s",
                               (presentity[4:],))
    root = pidf(body)
    assert sorted(t.get("id") for t in root.findall(f"{{{PIDF_NS}}}tuple")) == \
        sorted(f"d{n}" for n in range(devices))
    assert sorted(x.text for x in root.findall(f"{{{PIDF_NS}}}note")) == expected

    # The watcher's NOTIFY with the highest CSeq carries that last state.
    time.sleep(1.0)
    last = max(ua.notifies(watched.call_id), key=lambda n: n.cseq[0])
    assert sorted(x.text for x in pidf(last.body).findall(f"{{{PIDF_NS}}}note")) == expected
