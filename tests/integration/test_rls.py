"""The resource list server (RFC 4662, RFC 4826, RFC 5367) against real
Kamailio, MariaDB, SIP and HTTP: lists on the built-in XCAP server, list
subscriptions with RLMI NOTIFYs, ad-hoc lists in the SUBSCRIBE."""

import subprocess
import sys
import time
import zlib

import pytest

from conftest import settings
from harness import ROOT, Kamailio
from helpers import pidf_body, tuples, wait_answered, xcap
from sipua import ListNotify, SipUA, rand

RL = "urn:ietf:params:xml:ns:resource-lists"
RLS = "urn:ietf:params:xml:ns:rls-services"
RL_TYPE = "application/resource-lists+xml"
RLS_TYPE = "application/rls-services+xml"
PASSWORD = "s3cret"
HOST = "127.0.0.1"
LIST_HEADERS = [("Supported", "eventlist"),
                ("Accept", "application/pidf+xml, application/rlmi+xml, multipart/related")]


@pytest.fixture(scope="module")
def kamailio(database):
    k = Kamailio(settings(database, rls_notify_interval=0, rls_max_document_bytes=4096,
                          rls_max_members=6, rls_max_depth=3, rls_max_notify_bytes=2048)).start()
    yield k
    k.cleanup()


@pytest.fixture
def owner(database):
    """A user with credentials (XCAP is digest-authenticated)."""
    user = f"o{rand(6)}"
    database.add_subscriber(user, HOST, PASSWORD)
    return user


def base(kamailio) -> str:
    return f"http://127.0.0.1:{kamailio.port}"


def lists_path(user: str) -> str:
    return f"/xcap-root/resource-lists/users/sip:{user}@{HOST}/index"


def services_path(user: str) -> str:
    return f"/xcap-root/rls-services/users/sip:{user}@{HOST}/index"


def put(kamailio, user, path, body, content_type, password=PASSWORD):
    return xcap(base(kamailio), "PUT", path, user=user, password=password, body=body,
                content_type=content_type)


def resource_lists(*lists: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?><resource-lists xmlns="{RL}">'
            + "".join(lists) + "</resource-lists>").encode()


def rl_list(name: str, *items: str) -> str:
    return f'<list name="{name}">' + "".join(items) + "</list>"


def entry(uri: str, name: str = "") -> str:
    display = f"<display-name>{name}</display-name>" if name else ""
    return f'<entry uri="{uri}">{display}</entry>'


def services(*items: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?><rls-services xmlns="{RLS}"'
            f' xmlns:rl="{RL}">' + "".join(items) + "</rls-services>").encode()


def service(uri: str, user: str, list_name: str, packages: str = "") -> str:
    ref = (f"http://127.0.0.1/xcap-root/resource-lists/users/sip:{user}@{HOST}/index/~~/"
           f"resource-lists/list%5b@name=%22{list_name}%22%5d")
    return f'<service uri="{uri}"><resource-list>{ref}</resource-list>{packages}</service>'


def external(user: str, list_name: str) -> str:
    return (f'<external anchor="http://127.0.0.1/xcap-root/resource-lists/users/sip:{user}@{HOST}'
            f'/index/~~/resource-lists/list%5b@name=%22{list_name}%22%5d"/>')


def entry_ref(user: str, list_name: str, uri: str) -> str:
    return (f'<entry-ref ref="resource-lists/users/sip:{user}@{HOST}/index/~~/resource-lists/'
            f'list%5b@name=%22{list_name}%22%5d/entry%5b@uri=%22{uri}%22%5d"/>')


def member() -> str:
    return f"sip:m{rand(8)}@{HOST}"


def publish(kamailio, presentity, basic, note=None):
    dev = SipUA(kamailio.address)
    try:
        r = dev.request("PUBLISH", presentity, [("Event", "presence"),
                                                ("Content-Type", "application/pidf+xml")],
                        pidf_body(presentity, "t1", basic, note=note))
        assert r.status == 200, r
    finally:
        dev.close()


def provision(kamailio, user, members, list_uri=None):
    """The user's list "friends" of `members` and its service URI."""
    list_uri = list_uri or f"sip:{user}-list@{HOST}"
    assert put(kamailio, user, lists_path(user),
               resource_lists(rl_list("friends", *(entry(m) for m in members))),
               RL_TYPE)[0] in (200, 201)
    assert put(kamailio, user, services_path(user),
               services(service(list_uri, user, "friends")), RLS_TYPE)[0] in (200, 201)
    return list_uri


def list_ua(kamailio, user):
    return SipUA(kamailio.address, user=user)


# -- XCAP ------------------------------------------------------------------------------

def test_resource_lists_are_stored_and_read_by_their_owner_only(kamailio, database, owner):
    body = resource_lists(rl_list("friends", entry(member(), "Bob")))
    status, headers, _ = put(kamailio, owner, lists_path(owner), body, RL_TYPE)
    assert status == 201 and headers["ETag"]
    status, headers, got = xcap(base(kamailio), "GET", lists_path(owner), user=owner,
                                password=PASSWORD)
    assert status == 200 and got == body and headers["Content-Type"] == RL_TYPE
    database.add_subscriber("mallory", HOST, "m")
    assert xcap(base(kamailio), "GET", lists_path(owner), user="mallory", password="m")[0] == 403
    assert xcap(base(kamailio), "GET", lists_path(owner))[0] == 401
    assert put(kamailio, owner, lists_path(owner), body, "application/xml")[0] == 415


def test_bad_resource_lists_get_the_rfc_4825_conflicts(kamailio, owner):
    path = lists_path(owner)
    status, _, body = put(kamailio, owner, path, b"<resource-lists", RL_TYPE)
    assert status == 409 and b"<not-well-formed" in body
    duplicate = resource_lists(rl_list("a", entry("sip:x@h"), entry("sip:x@h")))
    status, _, body = put(kamailio, owner, path, duplicate, RL_TYPE)
    assert status == 409 and b"<uniqueness-failure" in body
    status, _, body = put(kamailio, owner, path, b"<?xml version='1.0'?><other/>", RL_TYPE)
    assert status == 409 and b"<schema-validation-error" in body
    # rls_max_document_bytes: 4096.
    big = resource_lists(rl_list("a", *(entry(f"sip:u{i:04d}@{HOST}") for i in range(200))))
    assert len(big) > 4096
    assert put(kamailio, owner, path, big, RL_TYPE)[0] == 413


def test_a_list_that_refers_to_itself_is_refused(kamailio, owner):
    loop = resource_lists(rl_list("a", entry(member()), external(owner, "b")),
                          rl_list("b", external(owner, "a")))
    status, _, body = put(kamailio, owner, lists_path(owner), loop, RL_TYPE)
    assert status == 409 and b"<constraint-failure" in body and b"refers to itself" in body
    # rls_max_depth: 3 levels of nesting.
    deep = resource_lists(rl_list("a", rl_list("b", rl_list("c", rl_list("d", entry(member()))))))
    status, _, body = put(kamailio, owner, lists_path(owner), deep, RL_TYPE)
    assert status == 409 and b"deeper" in body
    fine = resource_lists(rl_list("a", rl_list("b", rl_list("c", entry(member())))))
    assert put(kamailio, owner, lists_path(owner), fine, RL_TYPE)[0] == 201


def test_a_service_longer_than_rls_max_members_is_refused(kamailio, owner):
    provision(kamailio, owner, [member() for _ in range(6)])
    # rls_max_members: 6, through either document.
    seven = resource_lists(rl_list("friends", *(entry(member()) for _ in range(7))))
    status, _, body = put(kamailio, owner, lists_path(owner), seven, RL_TYPE)
    assert status == 409 and b"<constraint-failure" in body and b"more than 6" in body
    inline = services(f'<service uri="sip:{owner}-x@{HOST}"><list>'
                      + "".join(f'<rl:entry uri="{member()}"/>' for _ in range(7))
                      + "</list></service>")
    assert put(kamailio, owner, services_path(owner), inline, RLS_TYPE)[0] == 409


def test_a_service_uri_belongs_to_one_user(kamailio, database, owner):
    uri = f"sip:shared-{rand(6)}@{HOST}"
    provision(kamailio, owner, [member()], uri)
    other = f"o{rand(6)}"
    database.add_subscriber(other, HOST, PASSWORD)
    put(kamailio, other, lists_path(other), resource_lists(rl_list("friends")), RL_TYPE)
    status, _, body = put(kamailio, other, services_path(other),
                          services(service(uri, other, "friends")), RLS_TYPE)
    assert status == 409 and b"<uniqueness-failure" in body
    # The global index is for trusted list servers only: not over digest.
    assert xcap(base(kamailio), "GET", "/xcap-root/rls-services/global/index", user=owner,
                password=PASSWORD)[0] == 403
    assert database.query("SELECT owner FROM pa_rls_service WHERE uri = %s",
                          (uri[4:],)) == [(f"{owner}@{HOST}",)]


# -- list subscriptions (RFC 4662) ---------------------------------------------------------

def test_a_list_uri_without_eventlist_gets_421(kamailio, owner):
    list_uri = provision(kamailio, owner, [member()])
    ua = list_ua(kamailio, owner)
    try:
        r, _ = ua.subscribe(list_uri)
        assert r.status == 421 and r.get("require") == "eventlist"
        r, _ = ua.subscribe(list_uri, headers=[("Supported", "eventlist"),
                                               ("Accept", "application/pidf+xml")])
        assert r.status == 406
    finally:
        ua.close()


def test_a_list_is_served_whatever_a_presentity_would_refuse(kamailio, database, owner):
    """A SUBSCRIBE is stored as one to a presentity unless its URI is a
    list's, and asked as one to a list when that fails: an Accept without a
    presentity's format and a fetch (Expires: 0) still get the list."""
    bob = member()
    publish(kamailio, bob, "open")
    list_uri = provision(kamailio, owner, [bob])
    ua = list_ua(kamailio, owner)
    try:
        r, dialog = ua.subscribe(list_uri, headers=[
            ("Supported", "eventlist"), ("Accept", "multipart/related, application/rlmi+xml")])
        assert r.status == 200 and r.get("require") == "eventlist"
        n = ListNotify(ua.wait_notify(dialog.call_id))
        assert n.full and list(n.resources()) == [bob]
        assert n.resources()[bob]["type"] == "application/pidf+xml"
        r, fetch = ua.subscribe(list_uri, expires=0, headers=LIST_HEADERS)
        assert r.status == 200 and r.get("require") == "eventlist"
        got = ua.wait_notify(fetch.call_id)
        assert got.subscription_state()[0] == "terminated"
        assert tuples(ListNotify(got).resources()[bob]["body"]) == [("t1", "open")]
        # Neither was stored as a subscription to a presentity.
        assert database.query("SELECT COUNT(*) FROM pa_subscription WHERE presentity = %s"
                              " AND content_type <> 'multipart/related'",
                              (list_uri[4:],)) == [(0,)]
    finally:
        ua.close()


def test_list_subscription_full_then_partial_then_full_after_refresh(kamailio, database, owner):
    bob, carol, dave, erin = member(), member(), member(), member()
    publish(kamailio, bob, "open")
    lists = resource_lists(
        rl_list("friends", entry(bob, "Bob"), rl_list("work", entry(carol, "Carol")),
                entry_ref(owner, "others", dave), external(owner, "more")),
        rl_list("others", entry(dave, "Dave")),
        rl_list("more", entry(erin), entry(bob)))
    assert put(kamailio, owner, lists_path(owner), lists, RL_TYPE)[0] == 201
    list_uri = f"sip:{owner}-buddies@{HOST}"
    assert put(kamailio, owner, services_path(owner),
               services(service(list_uri, owner, "friends")), RLS_TYPE)[0] == 201
    ua = list_ua(kamailio, owner)
    try:
        r, dialog = ua.subscribe(list_uri, headers=LIST_HEADERS)
        assert r.status == 200 and r.get("require") == "eventlist"
        first = ua.wait_notify(dialog.call_id)
        assert first.get("require") == "eventlist"
        assert first.get("content-type").startswith("multipart/related")
        n = ListNotify(first)
        assert n.params["type"] == "application/rlmi+xml" and n.params["start"]
        assert n.version == 0 and n.full and n.rlmi.get("uri") == list_uri
        resources = n.resources()
        # Nested list, entry-ref and external flattened, bob once.
        assert list(resources) == [bob, carol, dave, erin]
        assert resources[bob]["name"] == "Bob" and resources[dave]["name"] == "Dave"
        assert resources[bob]["state"] == "active" and resources[bob]["cid"]
        assert resources[bob]["type"] == "application/pidf+xml"
        assert tuples(resources[bob]["body"]) == [("t1", "open")]
        assert tuples(resources[carol]["body"]) == [("pa-closed", "closed")]  # nothing published
        wait_answered(database, dialog.call_id)

        publish(kamailio, carol, "open")
        partial = ListNotify(ua.wait_notify(dialog.call_id, 2))
        assert partial.version == 1 and not partial.full
        assert list(partial.resources()) == [carol]
        assert tuples(partial.resources()[carol]["body"]) == [("t1", "open")]
        wait_answered(database, dialog.call_id)

        r = ua.resubscribe(dialog, 600, headers=LIST_HEADERS)
        assert r.status == 200 and r.get("require") == "eventlist"
        again = ListNotify(ua.wait_notify(dialog.call_id, 3))
        assert again.version == 2 and again.full
        assert list(again.resources()) == [bob, carol, dave, erin]
        wait_answered(database, dialog.call_id)

        r = ua.resubscribe(dialog, 0, headers=LIST_HEADERS)
        assert r.status == 200
        final = ua.wait_notify(dialog.call_id, 4)
        assert final.subscription_state()[0] == "terminated"
        assert final.get("require") == "eventlist"
        assert database.query("SELECT COUNT(*) FROM pa_rls_member m JOIN pa_rls_subscription r"
                              " USING (subscription_id) WHERE r.list_uri = %s",
                              (list_uri,)) == [(0,)]
    finally:
        ua.close()


def test_a_list_subscription_stays_one_whatever_a_refresh_accepts(kamailio, database, owner):
    list_uri = provision(kamailio, owner, [member()])
    ua = list_ua(kamailio, owner)
    try:
        _, dialog = ua.subscribe(list_uri, headers=LIST_HEADERS)
        ua.wait_notify(dialog.call_id)
        wait_answered(database, dialog.call_id)
        r = ua.resubscribe(dialog, 600, headers=[("Accept", "application/pidf+xml")])
        assert r.status == 200 and r.get("require") == "eventlist"
        n = ListNotify(ua.wait_notify(dialog.call_id, 2))     # RFC 4662 4.5: never mixed
        assert n.full and n.version == 1
    finally:
        ua.close()


def test_documents_beyond_rls_max_notify_bytes_follow_in_the_next_notifies(kamailio, database,
                                                                           owner):
    members = [member() for _ in range(4)]
    for m in members:
        publish(kamailio, m, "open", note="x" * 900)     # about 1.2 KB each
    list_uri = provision(kamailio, owner, members)
    ua = list_ua(kamailio, owner)
    try:
        _, dialog = ua.subscribe(list_uri, headers=LIST_HEADERS)
        first = ListNotify(ua.wait_notify(dialog.call_id))
        # Full state lists every member; documents up to 2048 bytes (one at least).
        assert first.full and list(first.resources()) == members
        carried = [u for u, r in first.resources().items() if r["body"]]
        assert len(carried) == 1
        assert all(first.resources()[u]["state"] is None for u in members if u not in carried)
        seen, n = set(carried), 1
        while len(seen) < 4:
            n += 1
            partial = ListNotify(ua.wait_notify(dialog.call_id, n))
            assert not partial.full and partial.version == n - 1
            got = [u for u, r in partial.resources().items() if r["body"]]
            assert len(got) == 1 and got[0] not in seen
            seen.update(got)
        assert n == 4
    finally:
        ua.close()


def test_registrations_of_members_reach_the_list(kamailio, database, owner):
    bob = member()
    list_uri = provision(kamailio, owner, [bob])
    ua = list_ua(kamailio, owner)
    phone = SipUA(kamailio.address, user=bob[4:].split("@")[0])
    try:
        _, dialog = ua.subscribe(list_uri, headers=LIST_HEADERS)
        ua.wait_notify(dialog.call_id)
        wait_answered(database, dialog.call_id)
        assert phone.register(aor=bob).status == 200
        def bob_open(m):
            body = ListNotify(m).resources().get(bob, {}).get("body")
            return body is not None and ("open" in [b for _, b in tuples(body)])
        n = ua.wait_notify_until(dialog.call_id, bob_open, timeout=5, after=1)
        assert not ListNotify(n).full
    finally:
        phone.close()
        ua.close()


def test_xcap_changes_reach_live_list_subscriptions(kamailio, database, owner):
    bob, carol = member(), member()
    list_uri = provision(kamailio, owner, [bob])
    ua = list_ua(kamailio, owner)
    try:
        _, dialog = ua.subscribe(list_uri, headers=LIST_HEADERS)
        assert list(ListNotify(ua.wait_notify(dialog.call_id)).resources()) == [bob]
        wait_answered(database, dialog.call_id)
        started = time.monotonic()
        assert put(kamailio, owner, lists_path(owner),
                   resource_lists(rl_list("friends", entry(carol))), RL_TYPE)[0] == 200
        n = ListNotify(ua.wait_notify(dialog.call_id, 2))
        assert time.monotonic() - started < 1.5
        # Membership changed: full state (a partial one cannot say who left).
        assert n.full and list(n.resources()) == [carol]
        wait_answered(database, dialog.call_id)
        # bob is no longer watched through the list.
        assert database.query("SELECT COUNT(*) FROM pa_rls_member WHERE uri = %s",
                              (bob,)) == [(0,)]
        # The service goes: the subscription ends.
        assert xcap(base(kamailio), "DELETE", services_path(owner), user=owner,
                    password=PASSWORD)[0] == 200
        final = ua.wait_notify(dialog.call_id, 3)
        assert final.subscription_state() == ("terminated", {"reason": "noresource"})
    finally:
        ua.close()


def test_a_member_fed_by_its_back_end_subscription(kamailio, database, owner):
    """A member whose source is 'backend' is served from what its back-end
    subscription feeds (store.backend.feed), and only the lists of that
    subscription's subscriber take it (RFC 4662 7.2)."""
    from pa_handlers.config import parse_db_url
    from pa_handlers.records import BackEndSubscription
    from pa_handlers.store import BackEnd, Database
    bob, remote = member(), f"sip:r{rand(6)}@b.example"
    list_uri = provision(kamailio, owner, [bob, remote])
    other = f"o{rand(6)}"
    database.add_subscriber(other, HOST, PASSWORD)
    other_list = provision(kamailio, other, [remote])
    ua, other_ua = list_ua(kamailio, owner), list_ua(kamailio, other)
    backend = BackEnd(Database(parse_db_url(database.url()), 3))

    def fed(state, reason, content_type, body):
        return backend.feed(BackEndSubscription(
            id=0, resource=remote, event="presence", subscriber=f"{owner}@{HOST}", call_id="",
            local_tag="", remote_tag="", remote_target="", route_set="", local_contact="",
            cseq=0, phase="", due_at=0, expires_at=0, failures=0, state="", reason=""),
            state, reason, content_type, body)
    try:
        _, dialog = ua.subscribe(list_uri, headers=LIST_HEADERS)
        _, other_dialog = other_ua.subscribe(other_list, headers=LIST_HEADERS)
        ua.wait_notify(dialog.call_id)
        other_ua.wait_notify(other_dialog.call_id)
        wait_answered(database, dialog.call_id)
        wait_answered(database, other_dialog.call_id)
        # What a back-end subscriber decides when the member is added.
        database.query("UPDATE pa_rls_member SET source = 'backend' WHERE uri = %s", (remote,))
        assert len(fed("terminated", "probation", "", None)) == 1
        n = ListNotify(ua.wait_notify(dialog.call_id, 2))
        assert n.resources() == {remote: dict(name=None, state="terminated", reason="probation",
                                              cid=None, body=None)}
        wait_answered(database, dialog.call_id)
        fed("active", "", "application/pidf+xml", pidf_body(remote, "r1", "open"))
        got = ListNotify(ua.wait_notify(dialog.call_id, 3)).resources()[remote]
        assert got["state"] == "active" and tuples(got["body"]) == [("r1", "open")]
        # The other user's list, with the same member, was told nothing.
        time.sleep(1.5)
        assert len(other_ua.notifies(other_dialog.call_id)) == 1
    finally:
        ua.close()
        other_ua.close()


def test_packages_of_a_service_are_honoured(kamailio, owner):
    list_uri = f"sip:{owner}-dialogs@{HOST}"
    put(kamailio, owner, lists_path(owner), resource_lists(rl_list("friends", entry(member()))),
        RL_TYPE)
    assert put(kamailio, owner, services_path(owner), services(
        service(list_uri, owner, "friends", "<packages><package>dialog</package></packages>")),
        RLS_TYPE)[0] == 201
    ua = list_ua(kamailio, owner)
    try:
        r, _ = ua.subscribe(list_uri, headers=LIST_HEADERS)
        assert r.status == 489
    finally:
        ua.close()


# -- ad-hoc lists (RFC 5367) ------------------------------------------------------------------

def adhoc_headers(encoding=None):
    headers = LIST_HEADERS + [("Require", "recipient-list-subscribe"),
                              ("Content-Type", RL_TYPE),
                              ("Content-Disposition", "recipient-list")]
    if encoding:
        headers.append(("Content-Encoding", encoding))
    return headers


def adhoc_subscribe(ua, body: bytes, headers, expires=600):
    """An initial SUBSCRIBE with a body (the test UA's subscribe has none)."""
    from sipua import Dialog
    dialog = Dialog(f"{rand()}@{ua.host}", rand(), f"<{ua.aor}>", f"<sip:rls@{HOST}>",
                    "presence", 1)
    ua.send_raw(ua.build("SUBSCRIBE", f"sip:rls@{HOST}", call_id=dialog.call_id,
                         from_=f"{dialog.local_uri};tag={dialog.local_tag}",
                         to=dialog.remote_uri, cseq=1,
                         headers=[("Event", "presence"), ("Expires", str(expires))] + headers,
                         body=body))
    return ua.wait_response(dialog.call_id, 1), dialog


def test_an_adhoc_list_deflated_is_served_like_a_stored_one(kamailio, database):
    bob, carol = member(), member()
    publish(kamailio, bob, "open")
    body = resource_lists(rl_list("", entry(bob), entry(carol)))
    ua = SipUA(kamailio.address, user=f"l{rand(6)}")
    try:
        r, dialog = adhoc_subscribe(ua, zlib.compress(body), adhoc_headers("deflate"))
        assert r.status == 200 and r.get("require") == "eventlist"
        n = ListNotify(ua.wait_notify(dialog.call_id))
        assert n.full and list(n.resources()) == [bob, carol]
        assert tuples(n.resources()[bob]["body"]) == [("t1", "open")]
        wait_answered(database, dialog.call_id)
        publish(kamailio, carol, "open")
        partial = ListNotify(ua.wait_notify(dialog.call_id, 2))
        assert list(partial.resources()) == [carol] and partial.version == 1
    finally:
        ua.close()


def test_options_say_lists_are_taken_in_subscribes(kamailio):
    ua = SipUA(kamailio.address)
    try:
        r = ua.request("OPTIONS", f"sip:rls@{HOST}")
        assert r.status == 200 and "recipient-list-subscribe" in r.get("supported")
    finally:
        ua.close()


def test_adhoc_list_limits(kamailio):
    ua = SipUA(kamailio.address, user=f"l{rand(6)}")
    try:
        # A deflate bomb: far more than rls_max_document_bytes once inflated.
        bomb = resource_lists(rl_list("", entry(member()))) + b" " * 200_000
        r, _ = adhoc_subscribe(ua, zlib.compress(bomb), adhoc_headers("deflate"))
        assert r.status == 413
        # rls_max_members: 6.
        many = resource_lists(rl_list("", *(entry(member()) for _ in range(7))))
        r, _ = adhoc_subscribe(ua, many, adhoc_headers())
        assert r.status == 413
        r, _ = adhoc_subscribe(ua, b"\x00garbage", adhoc_headers("deflate"))
        assert r.status == 400
        r, _ = adhoc_subscribe(ua, b"<resource-lists", adhoc_headers())
        assert r.status == 400
        six = resource_lists(rl_list("", *(entry(member()) for _ in range(6))))
        r, dialog = adhoc_subscribe(ua, six, [h for h in adhoc_headers() if h[0] != "Supported"])
        assert r.status == 421
        r, dialog = adhoc_subscribe(ua, six, adhoc_headers())
        assert r.status == 200
        assert len(ListNotify(ua.wait_notify(dialog.call_id)).resources()) == 6
    finally:
        ua.close()


# -- authorization of members, rate limit ---------------------------------------------------

@pytest.fixture(scope="module")
def strict(database):
    """auth implicit (members' watchers wait for approval), one list NOTIFY
    every 3 s at most."""
    k = Kamailio(settings(database, auth="implicit", rls_notify_interval=3)).start()
    yield k
    k.cleanup()


def admin(kamailio, *args):
    result = subprocess.run([sys.executable, "-m", "pa_handlers.admin", "--config",
                             kamailio.config_path, *args], capture_output=True, text=True,
                            cwd=ROOT, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_each_member_authorizes_the_subscriber_itself_and_rate_limit(strict, database, owner):
    bob, carol = member(), member()
    list_uri = provision(strict, owner, [bob, carol])
    subscriber = f"sip:{owner}@{HOST}"
    admin(strict, "approve", bob, subscriber)
    ua = list_ua(strict, owner)
    ua.credentials = (owner, PASSWORD)
    try:
        _, dialog = ua.subscribe(list_uri, headers=LIST_HEADERS)
        n = ListNotify(ua.wait_notify(dialog.call_id))
        resources = n.resources()
        assert resources[bob]["state"] == "active" and resources[bob]["cid"]
        assert resources[carol]["state"] == "pending" and resources[carol]["cid"] is None
        wait_answered(database, dialog.call_id)
        # carol approves: her instance becomes active, not before the rate
        # limit allows (3 s, counted in whole seconds of the clock: > 2 s).
        admin(strict, "approve", carol, subscriber)
        n2 = ua.wait_notify(dialog.call_id, 2, timeout=6)
        assert n2.received_at - ua.notifies(dialog.call_id)[0].received_at >= 1.9
        assert ListNotify(n2).resources()[carol]["state"] == "active"
        assert list(ListNotify(n2).resources()) == [carol]
        shown = admin(strict, "lists")
        assert list_uri in shown and carol in shown and "active" in shown
        # Someone else may not subscribe to the owner's list.
        database.add_subscriber("eve", HOST, PASSWORD)
        eve = SipUA(strict.address, user="eve")
        eve.credentials = ("eve", PASSWORD)
        try:
            r, _ = eve.subscribe(list_uri, headers=LIST_HEADERS)
            assert r.status == 403
        finally:
            eve.close()
    finally:
        ua.close()
