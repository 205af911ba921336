"""Authorization with pres-rules (auth: xcap) from the built-in XCAP server,
and watcher information (presence.winfo), against real Kamailio, MariaDB
and HTTP."""

import pytest
from lxml import etree

from conftest import settings
from harness import Kamailio
from helpers import pidf_body, tuples, wait_answered, xcap
from sipua import SipUA, rand

CP = "urn:ietf:params:xml:ns:common-policy"
PR = "urn:ietf:params:xml:ns:pres-rules"
WINFO_NS = "urn:ietf:params:xml:ns:watcherinfo"
ALL = ("<pr:provide-services><pr:all-services/></pr:provide-services>"
       "<pr:provide-persons><pr:all-persons/></pr:provide-persons>"
       "<pr:provide-devices><pr:all-devices/></pr:provide-devices>")
PASSWORD = "s3cret"


def ruleset(*rules: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?><cr:ruleset xmlns:cr="{CP}" xmlns:pr="{PR}">'
            + "".join(rules) + "</cr:ruleset>").encode()


def rule(handling: str, watcher: str | None = None, transformations: str = ALL) -> str:
    identity = f'<cr:identity><cr:one id="{watcher}"/></cr:identity>' if watcher else ""
    return (f'<cr:rule id="r{rand(4)}"><cr:conditions>{identity}</cr:conditions>'
            f"<cr:actions><pr:sub-handling>{handling}</pr:sub-handling></cr:actions>"
            f"<cr:transformations>{transformations}</cr:transformations></cr:rule>")


@pytest.fixture(scope="module")
def kamailio(database):
    k = Kamailio(settings(database, auth="xcap", winfo_auth="implicit")).start()
    yield k
    k.cleanup()


@pytest.fixture
def owner(database, presentity):
    """The presentity's user, with SIP credentials."""
    user = presentity[4:].split("@")[0]
    database.add_subscriber(user, "127.0.0.1", PASSWORD)
    return user


@pytest.fixture
def ua(kamailio, database):
    """A watcher with credentials: this Kamailio authenticates SIP."""
    database.add_subscriber("alice", "127.0.0.1", PASSWORD)
    u = SipUA(kamailio.address)
    u.credentials = ("alice", PASSWORD)
    yield u
    u.close()


def user_agent(kamailio, database, user):
    database.add_subscriber(user, "127.0.0.1", PASSWORD)
    u = SipUA(kamailio.address, user=user)
    u.credentials = (user, PASSWORD)
    return u


def rules_path(presentity: str) -> str:
    return f"/xcap-root/pres-rules/users/{presentity}/index"


def put_rules(kamailio, presentity, owner, body, **kw):
    base = f"http://127.0.0.1:{kamailio.port}"
    return xcap(base, "PUT", rules_path(presentity), user=owner, password=PASSWORD, body=body, **kw)


def publish_open(kamailio, database, presentity):
    """The presentity's own phone publishes (authenticated as its owner)."""
    dev = user_agent(kamailio, database, presentity[4:].split("@")[0])
    try:
        r = dev.request("PUBLISH", presentity, [("Event", "presence"),
                                                ("Content-Type", "application/pidf+xml")],
                        pidf_body(presentity, "phone", "open", note="at my desk"))
        assert r.status == 200
    finally:
        dev.close()


# -- the built-in XCAP server ------------------------------------------------

def test_xcap_server_wants_the_owners_credentials(kamailio, database, presentity, owner):
    base = f"http://127.0.0.1:{kamailio.port}"
    status, headers, _ = xcap(base, "GET", rules_path(presentity))
    assert status == 401
    assert headers["WWW-Authenticate"].startswith('Digest realm="127.0.0.1"')
    assert xcap(base, "GET", rules_path(presentity), user=owner, password="wrong")[0] == 401
    database.add_subscriber("mallory", "127.0.0.1", "m")
    assert xcap(base, "GET", rules_path(presentity), user="mallory", password="m")[0] == 403
    assert xcap(base, "GET", rules_path(presentity), user=owner, password=PASSWORD)[0] == 404
    assert xcap(base, "GET", "/elsewhere", user=owner, password=PASSWORD)[0] == 404


def test_xcap_documents_with_entity_tags(kamailio, presentity, owner):
    base = f"http://127.0.0.1:{kamailio.port}"
    first = ruleset(rule("allow"))
    status, headers, _ = put_rules(kamailio, presentity, owner, first)
    assert status == 201
    etag = headers["ETag"]
    status, headers, body = xcap(base, "GET", rules_path(presentity), user=owner,
                                 password=PASSWORD)
    assert (status, body, headers["ETag"]) == (200, first, etag)
    assert headers["Content-Type"] == "application/auth-policy+xml"
    second = ruleset(rule("block"))
    assert put_rules(kamailio, presentity, owner, second, headers={"If-Match": '"stale"'})[0] == 412
    assert put_rules(kamailio, presentity, owner, second, headers={"If-None-Match": "*"})[0] == 412
    status, headers, _ = put_rules(kamailio, presentity, owner, second, headers={"If-Match": etag})
    assert status == 200 and headers["ETag"] != etag
    assert xcap(base, "DELETE", rules_path(presentity), user=owner, password=PASSWORD)[0] == 200
    assert xcap(base, "GET", rules_path(presentity), user=owner, password=PASSWORD)[0] == 404


@pytest.mark.parametrize("body, content_type, status, condition", [
    (b"<cr:ruleset", "application/auth-policy+xml", 409, b"not-well-formed"),
    (b"<html/>", "application/auth-policy+xml", 409, b"schema-validation-error"),
    (ruleset(), "text/plain", 415, None),
])
def test_xcap_server_refuses_bad_documents(kamailio, presentity, owner, body, content_type,
                                           status, condition):
    got, _, reply = put_rules(kamailio, presentity, owner, body, content_type=content_type)
    assert got == status
    if condition:
        assert condition in reply


# -- sub-handling -------------------------------------------------------------

def test_without_rules_a_watcher_waits(ua, presentity):
    r, d = ua.subscribe(presentity)
    assert r.status == 200
    n = ua.wait_notify(d.call_id)
    assert n.subscription_state()[0] == "pending" and n.body == b""


@pytest.mark.parametrize("handling", ["allow", "confirm", "polite-block", "block"])
def test_each_sub_handling_action(kamailio, database, ua, presentity, owner, handling):
    publish_open(kamailio, database, presentity)
    assert put_rules(kamailio, presentity, owner, ruleset(rule(handling, ua.aor)))[0] == 201
    r, d = ua.subscribe(presentity)
    if handling == "block":
        assert r.status == 403
        return
    assert r.status == 200
    n = ua.wait_notify(d.call_id)
    state = n.subscription_state()[0]
    if handling == "allow":
        assert state == "active" and tuples(n.body) == [("phone", "open")]
    elif handling == "confirm":
        assert state == "pending" and n.body == b""
    else:
        # polite-block: looks active, and reveals nothing.
        assert state == "active" and tuples(n.body) == [("pa-closed", "closed")]
        assert b"at my desk" not in n.body


def test_the_most_permissive_applicable_rule_wins(kamailio, database, ua, presentity, owner):
    publish_open(kamailio, database, presentity)
    put_rules(kamailio, presentity, owner, ruleset(rule("block"), rule("allow", ua.aor)))
    r, d = ua.subscribe(presentity)
    assert r.status == 200 and tuples(ua.wait_notify(d.call_id).body) == [("phone", "open")]
    stranger = user_agent(kamailio, database, "stranger")
    try:
        assert stranger.subscribe(presentity)[0].status == 403
    finally:
        stranger.close()


def test_transformations_choose_what_the_watcher_sees(kamailio, database, ua, presentity,
                                                      owner):
    publish_open(kamailio, database, presentity)
    put_rules(kamailio, presentity, owner,
              ruleset(rule("allow", ua.aor, "<pr:provide-persons><pr:all-persons/>"
                                            "</pr:provide-persons>")))
    _, d = ua.subscribe(presentity)
    body = ua.wait_notify(d.call_id).body
    # Services (tuples, notes) not provided: a closed placeholder only.
    assert tuples(body) == [("pa-closed", "closed")] and b"at my desk" not in body


def test_rule_changes_reach_watchers_at_once(kamailio, ua, presentity, owner, database):
    publish_open(kamailio, database, presentity)
    _, d = ua.subscribe(presentity)
    assert ua.wait_notify(d.call_id).subscription_state()[0] == "pending"
    put_rules(kamailio, presentity, owner, ruleset(rule("allow", ua.aor)))
    approved = ua.wait_notify(d.call_id, 2)
    assert approved.subscription_state()[0] == "active"
    assert tuples(approved.body) == [("phone", "open")]
    put_rules(kamailio, presentity, owner, ruleset(rule("block", ua.aor)))
    blocked = ua.wait_notify(d.call_id, 3)
    assert blocked.subscription_state() == ("terminated", {"reason": "rejected"})
    assert database.query("SELECT 1 FROM pa_subscription WHERE call_id = %s",
                          (d.call_id,)) == []
    assert ua.subscribe(presentity)[0].status == 403


def test_withdrawn_permission_deactivates_an_active_watcher(kamailio, ua, presentity, owner):
    put_rules(kamailio, presentity, owner, ruleset(rule("allow", ua.aor)))
    _, d = ua.subscribe(presentity)
    assert ua.wait_notify(d.call_id).subscription_state()[0] == "active"
    base = f"http://127.0.0.1:{kamailio.port}"
    assert xcap(base, "DELETE", rules_path(presentity), user=owner, password=PASSWORD)[0] == 200
    # RFC 6665 has no way back to pending: the watcher re-subscribes and waits.
    n = ua.wait_notify(d.call_id, 2)
    assert n.subscription_state() == ("terminated", {"reason": "deactivated"})
    r, d2 = ua.subscribe(presentity)
    assert ua.wait_notify(d2.call_id).subscription_state()[0] == "pending"


# -- watcher information ---------------------------------------------------------

def watchers(body: bytes):
    root = etree.fromstring(body)
    items = [(w.text, w.get("status"), w.get("event"))
             for w in root.iter(f"{{{WINFO_NS}}}watcher")]
    return int(root.get("version")), root.get("state"), items


def test_winfo_tells_the_presentity_about_its_watchers(kamailio, database, presentity, owner):
    me = user_agent(kamailio, database, owner)
    alice = user_agent(kamailio, database, "alice")
    try:
        r, w = me.subscribe(presentity, event="presence.winfo",
                            headers=[("Accept", "application/watcherinfo+xml")])
        assert r.status == 200
        first = me.wait_notify(w.call_id)
        assert first.get("content-type") == "application/watcherinfo+xml"
        assert watchers(first.body) == (0, "full", [])
        # Each change after the answer to the NOTIFY before (else the two
        # would come together, as the whole list).
        wait_answered(database, w.call_id)

        _, d = alice.subscribe(presentity)
        new = me.wait_notify(w.call_id, 2)
        assert watchers(new.body) == (1, "partial", [(alice.aor, "pending", "subscribe")])
        wait_answered(database, w.call_id)

        put_rules(kamailio, presentity, owner, ruleset(rule("allow", alice.aor)))
        approved = me.wait_notify(w.call_id, 3)
        assert watchers(approved.body) == (2, "partial", [(alice.aor, "active", "approved")])
        assert alice.wait_notify(d.call_id, 2).subscription_state()[0] == "active"
        wait_answered(database, w.call_id)

        alice.resubscribe(d, 0)
        gone = me.wait_notify(w.call_id, 4)
        assert watchers(gone.body) == (3, "partial", [(alice.aor, "terminated", "timeout")])

        # A refresh brings the full list again, version still growing.
        me.resubscribe(w, 600)
        assert watchers(me.wait_notify(w.call_id, 5).body)[:2] == (4, "full")
    finally:
        me.close()
        alice.close()


def test_sip_requests_must_be_authenticated(kamailio, presentity):
    anonymous = SipUA(kamailio.address, user="anonymous")
    try:
        r, _ = anonymous.subscribe(presentity)
        assert r.status == 407 and "Digest" in r.get("proxy-authenticate")
    finally:
        anonymous.close()


def test_only_the_presentity_may_watch_its_watchers(ua, presentity):
    r, _ = ua.subscribe(presentity, event="presence.winfo")
    assert r.status == 403


def test_winfo_needs_the_watcherinfo_format(kamailio, database, presentity, owner):
    me = user_agent(kamailio, database, owner)
    try:
        r, _ = me.subscribe(presentity, event="presence.winfo",
                            headers=[("Accept", "application/pidf+xml")])
        assert r.status == 406
    finally:
        me.close()
