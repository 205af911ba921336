"""Turning rows of Kamailio's native presence tables into ours
(pa_handlers.native_import), without a database: the rows are as native
Kamailio 5.6 wrote them in the integration test."""

import pytest

from pa_handlers import pidf, presrules
from pa_handlers.authorization import Authorizer
from pa_handlers.config import settings_from_mapping
from pa_handlers.native_import import (_Skip, _publication, _subscription, decision_status,
                                       last_notify_cseq, native_authorization, route_set)
from pa_handlers.sip import BadRequest


def settings(**extra):
    return settings_from_mapping(dict(db_url="mysql://u:p@127.0.0.1:3306/pa", **extra))


PIDF_BODY = (b'<?xml version="1.0" encoding="UTF-8"?>\n<presence xmlns="urn:ietf:params:xml:ns:pidf"'
             b' entity="sip:bob@127.0.0.1"><tuple id="t1"><status><basic>open</basic></status>'
             b'</tuple><note>at lunch</note></presence>')


def presentity_row(**changes):
    row = {"id": 1, "username": "bob", "domain": "Example.COM", "event": "presence",
           "etag": "a.1795695285.18956.2.1", "expires": 2000, "received_time": 1000,
           "body": PIDF_BODY, "sender": "", "ruid": "pres-6b0822b5-4a0c-1"}
    row.update(changes)
    return row


def watcher_row(**changes):
    row = {"id": 1, "presentity_uri": "sip:bob@Example.COM", "watcher_username": "alice",
           "watcher_domain": "example.com", "to_user": "bob", "to_domain": "example.com",
           "from_user": "alice", "from_domain": "example.com", "event": "presence",
           "event_id": "", "to_tag": "4e655d41-a124be81", "from_tag": "v3xdvh7my7",
           "callid": "cy7tc0dcxv@127.0.0.1", "local_cseq": 1, "remote_cseq": 1,
           "contact": "sip:alice@127.0.0.1:45977;transport=udp",
           "record_route": "<sip:p1.example.com;lr>,<sip:p2.example.com;lr>",
           "expires": 2000, "status": 1, "reason": "", "version": 2,
           "socket_info": "udp:127.0.0.1:5060",
           "local_contact": "sip:127.0.0.1:5060;transport=udp"}
    row.update(changes)
    return row


def subscription(row, **options):
    s = settings(**options)
    return _subscription(row, "registrar", s, Authorizer(s, None, lambda: 0))


# -- publications ---------------------------------------------------------------

def test_presentity_row_becomes_a_publication_with_its_entity_tag():
    key, etag, source, publisher, content_type, parts, expires_at, updated_at = \
        _publication(presentity_row(), "registrar", settings())
    assert key == ("bob@example.com", "registrar", "presence")
    assert etag == "a.1795695285.18956.2.1"
    assert source == "native:pres-6b0822b5-4a0c-1"
    assert content_type == pidf.PIDF
    assert (expires_at, updated_at) == (2000, 1000)
    parsed = pidf.Parts.loads(parts)
    assert [(t.id, t.basic) for t in parsed.tuples] == [("t1", "open")]
    assert len(parsed.notes) == 1


def test_row_without_ruid_is_named_by_its_entity_tag():
    assert _publication(presentity_row(ruid=None), "registrar", settings())[2] == \
        "native:a.1795695285.18956.2.1"


@pytest.mark.parametrize("sender, publisher", [
    ("", "bob@example.com"),   # native leaves it empty when From is the presentity
    ("sip:alice@Example.COM;transport=tcp", "alice@example.com"),
])
def test_the_publisher_is_the_sender_or_the_presentity(sender, publisher):
    assert _publication(presentity_row(sender=sender), "registrar", settings())[3] == publisher


@pytest.mark.parametrize("changes, reason", [
    ({"event": "conference"}, "event 'conference'"),
    ({"event": "dialog"}, "not an acceptable dialog-info document"),
    ({"body": b"<not-pidf/>"}, "not an acceptable PIDF document"),
    ({"body": b""}, "not an acceptable PIDF document"),
    ({"etag": "x" * 65}, "entity-tag"),
    ({"etag": "a b"}, "entity-tag"),
])
def test_unusable_presentity_rows_are_skipped(changes, reason):
    with pytest.raises(_Skip, match=reason):
        _publication(presentity_row(**changes), "registrar", settings())


# -- subscriptions ----------------------------------------------------------------

def test_active_watchers_row_becomes_the_same_dialog():
    sub = subscription(watcher_row())
    assert sub.dialog == ("cy7tc0dcxv@127.0.0.1", "4e655d41-a124be81", "v3xdvh7my7")
    assert (sub.presentity, sub.watcher) == ("bob@example.com", "alice@example.com")
    assert (sub.local_uri, sub.remote_uri) == ("<sip:bob@example.com>", "<sip:alice@example.com>")
    assert sub.remote_target == "sip:alice@127.0.0.1:45977;transport=udp"
    assert sub.route_set == "<sip:p1.example.com;lr>, <sip:p2.example.com;lr>"
    assert (sub.socket, sub.local_contact) == ("udp:127.0.0.1:5060",
                                              "sip:127.0.0.1:5060;transport=udp")
    assert (sub.remote_cseq, sub.local_cseq) == (1, 2)
    assert (sub.content_type, sub.status, sub.permissions) == (pidf.PIDF, "active", 7)
    assert sub.expires_at == 2000


def test_native_cseq_is_one_below_the_last_notify_sent():
    assert last_notify_cseq("presence", 0, 1) == 1
    assert last_notify_cseq("presence", 5, 1) == 6


def test_watcher_info_versions_keep_growing():
    """Ours is the CSeq minus one: the next NOTIFY (stored + 1) must carry
    a version above native's last (the version column)."""
    assert last_notify_cseq("presence.winfo", 1, 2) == 3
    assert last_notify_cseq("presence.winfo", 7, 2) == 8


@pytest.mark.parametrize("status, reason, expected", [
    (1, "", ("active", "", presrules.EVERYTHING)),
    (1, "polite-block", ("active", "", presrules.NOTHING)),
    (5, "", ("active", "", presrules.NOTHING)),
    (2, "", ("pending", "", presrules.EVERYTHING)),
    (4, "", ("pending", "", presrules.EVERYTHING)),
])
def test_presence_standing_is_kept(status, reason, expected):
    granted = native_authorization(status, reason, "implicit")
    assert (granted.status, granted.reason, granted.permissions) == expected


def test_auth_none_lets_pending_watchers_in():
    assert native_authorization(2, "", "none").status == "active"


def test_terminated_subscriptions_are_skipped():
    with pytest.raises(_Skip, match="terminated"):
        subscription(watcher_row(status=3, reason="rejected"))


def test_watcher_info_follows_our_winfo_policy():
    winfo = dict(event="presence.winfo", watcher_username="bob", from_user="bob")
    sub = subscription(watcher_row(**winfo))
    assert (sub.content_type, sub.status) == ("application/watcherinfo+xml", "active")
    with pytest.raises(_Skip, match="winfo_auth"):
        subscription(watcher_row(event="presence.winfo"))
    assert subscription(watcher_row(event="presence.winfo"), winfo_auth="none").status == "active"


@pytest.mark.parametrize("changes", [{"to_tag": "a b"}, {"callid": ""},
                                     {"contact": "mailto:a@b"},
                                     {"record_route": "<http://x>"}])
def test_malformed_dialogs_are_refused(changes):
    with pytest.raises(BadRequest):
        subscription(watcher_row(**changes))


def test_other_events_are_skipped():
    with pytest.raises(_Skip, match="conference"):
        subscription(watcher_row(event="conference"))


def test_empty_record_route_is_an_empty_route_set():
    assert route_set("") == ""


# -- decisions --------------------------------------------------------------------

@pytest.mark.parametrize("status, reason, expected", [
    (1, "", ("active", "")),
    (1, "polite-block", ("polite-block", "")),
    (2, "", ("pending", "")),
    (4, "", ("pending", "")),
    (3, "rejected", ("terminated", "rejected")),
    (3, "", ("terminated", "rejected")),
    (3, "not a token", ("terminated", "rejected")),
])
def test_decisions_in_our_words(status, reason, expected):
    assert decision_status(status, reason) == expected
