"""The dialog event package (RFC 4235, busy-lamp fields) over SIP against
real Kamailio and MariaDB: publications of several publishers aggregated
per entity, the empty document, versions per subscription, ended dialogs,
expiry, hostile documents, a restart and a second node."""

import time

import pytest
from lxml import etree

from conftest import settings
from harness import Kamailio
from helpers import publish_event, wait_answered, wait_view
from sipua import SipUA

DIALOG_INFO = "application/dialog-info+xml"
NS = "urn:ietf:params:xml:ns:dialog-info"


def dialog_info(presentity, *dialogs, version=0, state="full"):
    """A publisher's document: dialogs as (id, state) or (id, state, extra xml)."""
    inner = "".join(
        f'<dialog id="{d[0]}" direction="recipient"><state>{d[1]}</state>'
        f'{d[2] if len(d) > 2 else ""}</dialog>' for d in dialogs)
    return (f'<?xml version="1.0"?><dialog-info xmlns="{NS}" version="{version}"'
            f' state="{state}" entity="{presentity}">{inner}</dialog-info>').encode()


def publish(ua, presentity, body=b"", **kw):
    return publish_event(ua, presentity, "dialog", DIALOG_INFO, body, **kw)


def parsed(notify):
    assert notify.get("content-type") == DIALOG_INFO
    return etree.fromstring(notify.body)


def dialogs(notify):
    root = parsed(notify)
    return sorted((d.get("id"), d.find(f"{{{NS}}}state").text)
                  for d in root.findall(f"{{{NS}}}dialog"))


def table(notifies):
    """The watcher's table of dialogs after `notifies` (RFC 4235 4.3): a
    full document replaces it, a partial one (whose version must follow the
    last by one) changes the dialogs it names; terminated ones leave."""
    dialogs_by_id, last, seen = {}, None, set()
    for n in notifies:
        if not n.body or n.cseq[0] in seen:
            continue    # no state, or a retransmission
        seen.add(n.cseq[0])
        root = parsed(n)
        version = int(root.get("version"))
        if root.get("state") == "full":
            dialogs_by_id = {}
        else:
            assert last is not None and version == last + 1, (last, version)
        for d in root.findall(f"{{{NS}}}dialog"):
            dialogs_by_id[d.get("id")] = d.find(f"{{{NS}}}state").text
        dialogs_by_id = {k: v for k, v in dialogs_by_id.items() if v != "terminated"}
        last = version
    return sorted(dialogs_by_id.items())


def sees(ua, call_id, *expected, timeout=5.0):
    """Wait until the watcher's table is `expected`."""
    return wait_view(ua, call_id, table, sorted(expected), timeout)


@pytest.fixture
def blf(ua, presentity):
    """A phone's BLF subscription to the presentity, past its first NOTIFY."""
    r, d = ua.subscribe(presentity, event="dialog", headers=[("Accept", DIALOG_INFO)])
    assert r.status == 200
    ua.wait_notify(d.call_id)
    return d


def test_subscribe_without_publication_gets_an_empty_full_document(ua, presentity):
    r, d = ua.subscribe(presentity, event="dialog", expires=None)
    assert r.status == 200
    # RFC 4235 3.4: an hour for all of a user's dialogs.
    assert r.get("expires") == "1800"    # the test's max_subscription_expiration
    n = ua.wait_notify(d.call_id)
    assert n.get("event") == "dialog"
    assert n.subscription_state()[0] == "active"
    root = parsed(n)
    assert root.tag == f"{{{NS}}}dialog-info"
    assert (root.get("version"), root.get("state"), root.get("entity")) == \
        ("0", "full", presentity)
    assert len(root) == 0


def test_accept_without_dialog_info_gets_406(ua, presentity):
    r, _ = ua.subscribe(presentity, event="dialog", headers=[("Accept", "application/pidf+xml")])
    assert r.status == 406


def test_unknown_event_gets_489_listing_every_package(ua, presentity):
    r, _ = ua.subscribe(presentity, event="conference")
    assert r.status == 489
    assert r.get("allow-events") == "presence, presence.winfo, dialog, message-summary, reg"
    r = ua.request("PUBLISH", presentity, [("Event", "reg"), ("Content-Type", "text/plain")],
                   b"x")
    assert r.status == 489
    assert r.get("allow-events") == "presence, dialog, message-summary"


def test_two_publishers_are_aggregated_and_versions_count_per_subscription(
        ua, presentity, blf, kamailio):
    proxy, pbx = SipUA(kamailio.address, user="proxy"), SipUA(kamailio.address, user="pbx")
    try:
        assert publish(proxy, presentity, dialog_info(presentity, ("a1", "early"))).status == 200
        n = sees(ua, blf.call_id, ("a1", "early"))
        assert publish(pbx, presentity, dialog_info(presentity, ("b1", "confirmed"))).status == 200
        n = sees(ua, blf.call_id, ("a1", "early"), ("b1", "confirmed"))
        # After the first full document, only what changed (RFC 4235 3.7).
        assert parsed(ua.notifies(blf.call_id)[0]).get("state") == "full"
        assert parsed(n).get("state") == "partial"
        assert dialogs(n) == [("b1", "confirmed")]
        # Each NOTIFY of the subscription: version = its count from 0.
        versions = [int(parsed(m).get("version")) for m in ua.notifies(blf.call_id)]
        assert versions == list(range(len(versions)))
        # A second watcher counts its own versions from 0.
        r, d2 = ua.subscribe(presentity, event="dialog")
        first = ua.wait_notify(d2.call_id)
        assert parsed(first).get("version") == "0"
        assert dialogs(first) == [("a1", "early"), ("b1", "confirmed")]
    finally:
        proxy.close()
        pbx.close()


def test_forked_early_dialogs_keep_their_ids_and_the_state_is_lowercased(ua, presentity, blf):
    # pua_dialoginfo writes "Trying" with a capital T.
    body = dialog_info(presentity, ("f1", "early"), ("f2", "early"), ("f3", "Trying"))
    assert publish(ua, presentity, body).status == 200
    sees(ua, blf.call_id, ("f1", "early"), ("f2", "early"), ("f3", "trying"))


def test_local_and_remote_are_passed_on_for_pickup(ua, presentity, blf):
    extra = ('<local><identity display="Bob">sip:bob@example.com</identity></local>'
             '<remote><identity>sip:carol@example.com</identity>'
             '<target uri="sip:carol@192.0.2.9"/></remote>')
    body = dialog_info(presentity, ("p1", "early", extra)).replace(
        b'<dialog id="p1"', b'<dialog id="p1" call-id="c@x" local-tag="lt" remote-tag="rt"')
    assert publish(ua, presentity, body).status == 200
    n = sees(ua, blf.call_id, ("p1", "early"))
    d = parsed(n).find(f"{{{NS}}}dialog")
    assert (d.get("call-id"), d.get("local-tag"), d.get("remote-tag")) == ("c@x", "lt", "rt")
    assert d.find(f"{{{NS}}}remote/{{{NS}}}target").get("uri") == "sip:carol@192.0.2.9"
    assert d.find(f"{{{NS}}}local/{{{NS}}}identity").get("display") == "Bob"


def test_ended_dialog_is_shown_terminated_once_then_dropped(ua, presentity, blf, kamailio,
                                                           database):
    other = SipUA(kamailio.address, user="pbx")
    try:
        r = publish(ua, presentity, dialog_info(presentity, ("e1", "confirmed")))
        sees(ua, blf.call_id, ("e1", "confirmed"))
        wait_answered(database, blf.call_id)
        assert publish(ua, presentity, dialog_info(presentity, ("e1", "terminated")),
                       etag=r.get("sip-etag")).status == 200
        ua.wait_notify_until(blf.call_id,
                             lambda n: n.body and ("e1", "terminated") in dialogs(n))
        # The next change of the entity no longer carries it.
        assert publish(other, presentity, dialog_info(presentity, ("o1", "early"))).status == 200
        sees(ua, blf.call_id, ("o1", "early"))
    finally:
        other.close()


def test_publication_expiry_and_removal_empty_the_document(ua, presentity, blf):
    r = publish(ua, presentity, dialog_info(presentity, ("x1", "confirmed")), expires=2)
    assert r.status == 200
    sees(ua, blf.call_id, ("x1", "confirmed"))
    n = sees(ua, blf.call_id, timeout=8)
    # The publication expired: its dialog is told terminated.
    assert (parsed(n).get("state"), dialogs(n)) == ("partial", [("x1", "terminated")])
    r = publish(ua, presentity, dialog_info(presentity, ("x2", "early")))
    sees(ua, blf.call_id, ("x2", "early"))
    assert publish(ua, presentity, etag=r.get("sip-etag"), expires=0).status == 200
    sees(ua, blf.call_id)


def test_changes_while_a_notify_is_unanswered_arrive_as_one_partial_document(
        ua, presentity, blf, database):
    """The watcher stops answering; two changes follow (the second only
    marks the subscription dirty); once it answers a retransmission, one
    partial NOTIFY carries both changes, relative to what it acknowledged."""
    r = publish(ua, presentity, dialog_info(presentity, ("c1", "early"), ("c2", "early")))
    sees(ua, blf.call_id, ("c1", "early"), ("c2", "early"))
    wait_answered(database, blf.call_id)
    ua.notify_answer = None
    etag = publish(ua, presentity, dialog_info(presentity, ("c1", "confirmed"), ("c2", "early")),
                   etag=r.get("sip-etag")).get("sip-etag")
    ua.wait_notify_until(blf.call_id, lambda n: n.body and ("c1", "confirmed") in dialogs(n))
    assert publish(ua, presentity, dialog_info(presentity, ("c1", "confirmed")),
                   etag=etag).status == 200
    ua.notify_answer = 200     # tm's retransmission of the NOTIFY in flight gets its 200
    n = sees(ua, blf.call_id, ("c1", "confirmed"), timeout=10)
    assert (parsed(n).get("state"), dialogs(n)) == ("partial", [("c2", "terminated")])


@pytest.mark.parametrize("body, code", [
    (b"<dialog-info xmlns='urn:ietf:params:xml:ns:dialog-info'", 400),
    (b"<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='sip:a@b'/>", 400),
    (f"<dialog-info xmlns='{NS}' version='x' state='full' entity='sip:a@b'/>".encode(), 400),
    (f"<dialog-info xmlns='{NS}' version='1' state='full' entity='sip:a@b'>"
     f"<dialog id='d'><state>ringing</state></dialog></dialog-info>".encode(), 400),
    (f"<dialog-info xmlns='{NS}' version='1' state='full' entity='sip:a@b'>"
     f"<dialog><state>early</state></dialog></dialog-info>".encode(), 400),
    (b'<!DOCTYPE x [<!ENTITY a "aaaa">]><dialog-info/>', 400),
])
def test_hostile_documents_get_pidf_codes_and_change_nothing(ua, presentity, blf, database,
                                                             body, code):
    r = ua.request("PUBLISH", presentity, [("Event", "dialog"), ("Content-Type", DIALOG_INFO)],
                   body)
    assert r.status == code
    assert ua.quiet(blf.call_id, 0.5) == []
    assert database.query("SELECT etag FROM pa_publication WHERE presentity = %s"
                          " AND event = 'dialog'", (presentity[4:],)) == []


def test_too_many_dialogs_get_413(ua, presentity):
    body = dialog_info(presentity, *[(f"d{i}", "early") for i in range(33)])
    r = publish(ua, presentity, body)
    assert r.status == 413
    assert publish(ua, presentity,
                   dialog_info(presentity, *[(f"d{i}", "early") for i in range(32)])).status == 200


def test_other_content_type_gets_415(ua, presentity):
    r = ua.request("PUBLISH", presentity, [("Event", "dialog"),
                                           ("Content-Type", "application/pidf+xml")], b"<x/>")
    assert r.status == 415
    assert r.get("accept") == DIALOG_INFO


def test_unsubscribe_gets_final_notify_with_full_state(ua, presentity, blf):
    publish(ua, presentity, dialog_info(presentity, ("u1", "early")))
    sees(ua, blf.call_id, ("u1", "early"))
    assert ua.resubscribe(blf, 0).status == 200
    n = ua.wait_notify_until(blf.call_id, lambda m: m.subscription_state()[0] == "terminated")
    # SUBSCRIBE-triggered: full state (RFC 4235 3.7).
    assert (parsed(n).get("state"), dialogs(n)) == ("full", [("u1", "early")])


def test_state_survives_a_restart_and_reaches_watchers_of_another_node(
        database, presentity):
    a = Kamailio(settings(database)).start()
    b = Kamailio(settings(database)).start()
    watcher, publisher = SipUA(a.address), SipUA(b.address, user="proxy")
    try:
        r, d = watcher.subscribe(presentity, event="dialog")
        watcher.wait_notify(d.call_id)
        wait_answered(database, d.call_id)
        assert publish(publisher, presentity,
                       dialog_info(presentity, ("n1", "early"))).status == 200
        n = sees(watcher, d.call_id, ("n1", "early"))
        assert f":{b.port};branch=" in n.get("via")
        wait_answered(database, d.call_id)
        a.restart()
        assert publish(publisher, presentity,
                       dialog_info(presentity, ("n1", "confirmed"))).status == 200
        sees(watcher, d.call_id, ("n1", "confirmed"))
        # The version kept counting across the restart and the nodes.
        versions = [int(parsed(m).get("version")) for m in watcher.notifies(d.call_id)]
        assert versions == list(range(len(versions)))
        wait_answered(database, d.call_id)
        assert watcher.resubscribe(d, 600).status == 200
        n = watcher.wait_notify_until(d.call_id, lambda m: parsed(m).get("version") ==
                                      str(len(versions)))
        assert (parsed(n).get("state"), dialogs(n)) == ("full", [("n1", "confirmed")])
    finally:
        watcher.close()
        publisher.close()
        a.cleanup()
        b.cleanup()


def test_event_packages_setting_limits_what_is_served(database, presentity):
    k = Kamailio(settings(database, event_packages=["presence"])).start()
    ua = SipUA(k.address)
    try:
        r, _ = ua.subscribe(presentity, event="dialog")
        assert r.status == 489
        assert r.get("allow-events") == "presence, presence.winfo"
        assert publish(ua, presentity, dialog_info(presentity, ("a", "early"))).status == 489
    finally:
        ua.close()
        k.cleanup()
