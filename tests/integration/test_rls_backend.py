"""Back-end subscriptions (RFC 4662 4.5, 7) with two instances of the agent
on one machine, each with its own Kamailio and database: A is
authoritative for a.example, B for b.example.  alice@a.example's list
holds bob@a.example (served by A from local state) and carol@b.example (A
subscribes to her on B, with alice's identity)."""

import contextlib
import json
import subprocess
import sys
import time

import pytest

from conftest import settings
from harness import ROOT, Kamailio, ScratchDatabase
from helpers import pidf_body, tuples, wait_answered, wait_until, xcap
from sipua import ListNotify, SipUA, rand
from test_rls import LIST_HEADERS, RL, RL_TYPE, RLS, RLS_TYPE, publish

@pytest.fixture(scope="module")
def b_database():
    db = ScratchDatabase()
    yield db
    db.drop()


@pytest.fixture(scope="module")
def instance_b(b_database):
    k = Kamailio(settings(b_database, local_domains=["b.example"], min_expires=2,
                          xcap_auth="none")).start()
    yield k
    k.cleanup()


@pytest.fixture(scope="module")
def instance_a(database, instance_b):
    k = Kamailio(settings(database, local_domains=["a.example"], xcap_auth="none",
                          rls_notify_interval=0,
                          backend_routes={"b.example": f"127.0.0.1:{instance_b.port}"},
                          backend_expires=10, backend_timeout=2, backend_retry_min=1,
                          backend_retry_max=2,
                          max_backend_subscriptions_per_subscriber=3)).start()
    yield k
    k.cleanup()


def put_list(kamailio, owner, members, list_uri):
    base = f"http://127.0.0.1:{kamailio.port}"
    lists = (f'<?xml version="1.0" encoding="UTF-8"?><resource-lists xmlns="{RL}">'
             f'<list name="friends">' + "".join(f'<entry uri="{m}"/>' for m in members)
             + "</list></resource-lists>").encode()
    status, _, _ = xcap(base, "PUT", f"/xcap-root/resource-lists/users/sip:{owner}/index",
                        body=lists, content_type=RL_TYPE)
    assert status in (200, 201), status
    ref = (f"http://127.0.0.1/xcap-root/resource-lists/users/sip:{owner}/index/~~/"
           f"resource-lists/list%5b@name=%22friends%22%5d")
    services = (f'<?xml version="1.0" encoding="UTF-8"?><rls-services xmlns="{RLS}">'
                f'<service uri="{list_uri}"><resource-list>{ref}</resource-list></service>'
                "</rls-services>").encode()
    status, _, _ = xcap(base, "PUT", f"/xcap-root/rls-services/users/sip:{owner}/index",
                        body=services, content_type=RLS_TYPE)
    assert status in (200, 201), status


def admin(kamailio, *args) -> str:
    result = subprocess.run([sys.executable, "-m", "pa_handlers.admin", "--config",
                             kamailio.config_path, *args], capture_output=True, text=True,
                            cwd=ROOT, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout


@contextlib.contextmanager
def list_subscriber(instance, members):
    """A new user of a.example subscribed to its list of `members`:
    (its UA, the list dialog, its AOR)."""
    user = f"u{rand(6)}"
    aor = f"{user}@a.example"
    put_list(instance, aor, members, f"sip:{user}-list@a.example")
    ua = SipUA(instance.address, user=user)
    ua.aor = f"sip:{aor}"
    try:
        r, d = ua.subscribe(f"sip:{user}-list@a.example", headers=LIST_HEADERS)
        assert r.status == 200
        yield ua, d, aor
    finally:
        ua.close()


def state_of(ua, call_id, uri, predicate, timeout=5.0, after=0):
    """The first list NOTIFY from `after` on whose resource `uri` satisfies
    `predicate`."""
    def ok(msg):
        got = ListNotify(msg).resources().get(uri)
        return got is not None and predicate(got)
    try:
        return ListNotify(ua.wait_notify_until(call_id, ok, timeout, after))
    except TimeoutError:
        for n in ua.notifies(call_id):   # what came, for the failure's report
            print(ListNotify(n).version, ListNotify(n).resources())
        raise


def test_a_list_of_two_domains(instance_a, instance_b, database, b_database):
    user = f"alice{rand(5)}"
    alice, bob, carol = f"{user}@a.example", f"sip:bob{rand(5)}@a.example", \
        f"sip:carol{rand(5)}@b.example"
    list_uri = f"sip:{user}-list@a.example"
    put_list(instance_a, alice, [bob, carol], list_uri)
    publish(instance_a, bob, "open")
    publish(instance_b, carol, "open", note="on B")
    ua = SipUA(instance_a.address, user=user)
    ua.aor = f"sip:{alice}"
    try:
        r, dialog = ua.subscribe(list_uri, headers=LIST_HEADERS)
        assert r.status == 200 and r.get("require") == "eventlist"
        first = ListNotify(ua.wait_notify(dialog.call_id))
        assert first.full and first.resources()[bob]["state"] == "active"
        # Carol's state is not known yet: listed without instance.
        assert first.resources()[carol]["state"] is None

        # A subscribed to carol on B, as alice, once.
        got = state_of(ua, dialog.call_id, carol, lambda g: g["state"] == "active", 5)
        assert not got.full and set(got.resources()) == {carol}
        assert tuples(got.resources()[carol]["body"]) == [("t1", "open")]
        assert database.query("SELECT subscriber, event, phase FROM pa_rls_backend"
                              " WHERE resource = %s", (carol,)) == \
            [(alice, "presence", "established")]
        assert b_database.query("SELECT watcher FROM pa_subscription WHERE presentity = %s",
                                (carol[4:],)) == [(alice,)]
        shown = json.loads(admin(instance_a, "--json", "lists"))["backend"]
        assert [(b["resource"], b["subscriber"], b["phase"], b["state"]) for b in shown
                if b["resource"] == carol] == [(carol, alice, "established", "active")]
        assert "back-end subscriptions" in admin(instance_a, "lists")

        # PUBLISHes on either side: partial NOTIFYs within a second.
        for instance, who in ((instance_b, carol), (instance_a, bob)):
            wait_answered(database, dialog.call_id)
            seen = len(ua.notifies(dialog.call_id))
            started = time.monotonic()
            publish(instance, who, "closed")
            n = state_of(ua, dialog.call_id, who,
                         lambda g: g["body"] and "closed" in dict(tuples(g["body"])).values(),
                         3, after=seen)
            took = time.monotonic() - started
            print(f"PUBLISH of {who} to list NOTIFY: {took * 1000:.0f} ms")
            assert took < 1.0 and not n.full and set(n.resources()) == {who}

        # B stops: carol becomes terminated (the refresh times out) ...
        wait_answered(database, dialog.call_id)
        seen = len(ua.notifies(dialog.call_id))
        instance_b.stop()
        try:
            n = state_of(ua, dialog.call_id, carol, lambda g: g["state"] == "terminated",
                         20, after=seen)
            assert n.resources()[carol]["reason"] == "timeout"
        finally:
            instance_b.start()
        # ... and active again when B is back.
        seen = len(ua.notifies(dialog.call_id))
        state_of(ua, dialog.call_id, carol, lambda g: g["state"] == "active", 15, after=seen)

        # Carol leaves the list: the back-end subscription ends, on both sides.
        put_list(instance_a, alice, [bob], list_uri)
        wait_until(lambda: database.query("SELECT COUNT(*) FROM pa_rls_backend"
                                          " WHERE resource = %s", (carol,)) == [(0,)], 5)
        wait_until(lambda: b_database.query(
            "SELECT COUNT(*) FROM pa_subscription WHERE presentity = %s AND watcher = %s"
            " AND expires_at > UNIX_TIMESTAMP()", (carol[4:], alice)) == [(0,)], 5)
    finally:
        ua.close()


def test_a_list_of_two_subscribers_shares_nothing(instance_a, instance_b, database):
    """RFC 4662 7.2: one back-end subscription per subscriber; the same
    subscriber's two lists share one."""
    carol = f"sip:carol{rand(5)}@b.example"
    publish(instance_b, carol, "open")
    uas, dialogs, users = [], [], []
    try:
        for i in range(2):
            user = f"u{rand(6)}"
            users.append(f"{user}@a.example")
            put_list(instance_a, users[-1], [carol], f"sip:{user}-list@a.example")
            ua = SipUA(instance_a.address, user=user)
            ua.aor = f"sip:{users[-1]}"
            uas.append(ua)
            r, d = ua.subscribe(f"sip:{user}-list@a.example", headers=LIST_HEADERS)
            assert r.status == 200
            dialogs.append(d)
        # A second subscription of the first user to the same list.
        r, again = uas[0].subscribe(f"sip:{users[0].split('@')[0]}-list@a.example",
                                    headers=LIST_HEADERS)
        assert r.status == 200
        for ua, d in ((uas[0], dialogs[0]), (uas[1], dialogs[1]), (uas[0], again)):
            state_of(ua, d.call_id, carol, lambda g: g["state"] == "active", 5)
        rows = database.query("SELECT subscriber FROM pa_rls_backend WHERE resource = %s"
                              " ORDER BY subscriber", (carol,))
        assert rows == sorted((u,) for u in users)
    finally:
        for ua in uas:
            ua.close()


def test_notify_of_no_backend_dialog_gets_481(instance_a):
    ua = SipUA(instance_a.address)
    try:
        r = ua.request("NOTIFY", f"sip:nobody@127.0.0.1:{instance_a.port}",
                       [("Event", "presence"), ("Subscription-State", "active;expires=60")],
                       to=f"<sip:x@a.example>;tag={rand()}")
        assert r.status == 481
    finally:
        ua.close()


def test_back_end_subscriptions_per_subscriber_are_limited(instance_a, instance_b, database):
    """max_backend_subscriptions_per_subscriber (3 here): the members
    beyond are terminated (rejected), the others served."""
    remote = [f"sip:r{i}{rand(5)}@b.example" for i in range(4)]
    for uri in remote:
        publish(instance_b, uri, "open")
    with list_subscriber(instance_a, remote) as (ua, d, aor):
        for uri in remote[:3]:
            state_of(ua, d.call_id, uri, lambda g: g["state"] == "active", 5)
        state_of(ua, d.call_id, remote[3], lambda g: (g["state"], g["reason"]) ==
                 ("terminated", "rejected"), 5)
        assert database.query("SELECT COUNT(*) FROM pa_rls_backend WHERE subscriber = %s",
                              (aor,)) == [(3,)]


def test_a_restart_keeps_back_end_subscriptions(instance_a, instance_b, database):
    """The dialog lives in MySQL: A restarted refreshes the same back-end
    dialog (same Call-ID, higher CSeq) and the list is still fed."""
    carol = f"sip:carol{rand(5)}@b.example"
    publish(instance_b, carol, "open")
    with list_subscriber(instance_a, [carol]) as (ua, d, aor):
        state_of(ua, d.call_id, carol, lambda g: g["state"] == "active", 5)
        query = "SELECT call_id, cseq, phase FROM pa_rls_backend WHERE resource = %s"
        (call_id, cseq, _), = database.query(query, (carol,))
        instance_a.restart()
        # backend_expires 10: refreshed about 8 s after it was granted.
        wait_until(lambda: (lambda rows: rows[0][0] == call_id and rows[0][1] > cseq
                            and rows[0][2] == "established")(database.query(query, (carol,))),
                   15)
        wait_answered(database, d.call_id)
        seen = len(ua.notifies(d.call_id))
        publish(instance_b, carol, "closed")
        state_of(ua, d.call_id, carol,
                 lambda g: g["body"] and "closed" in dict(tuples(g["body"])).values(),
                 3, after=seen)


def test_two_nodes_of_a_send_each_refresh_once(instance_a, instance_b, database):
    """A second node on A's database: every back-end SUBSCRIBE (initial,
    refreshes) leaves from exactly one node (claimed with SKIP LOCKED)."""
    second = Kamailio(settings(database, local_domains=["a.example"], xcap_auth="none",
                               backend_routes={"b.example": f"127.0.0.1:{instance_b.port}"},
                               backend_expires=10, backend_timeout=2, backend_retry_min=1,
                               backend_retry_max=2)).start()
    carol = f"sip:carol{rand(5)}@b.example"
    publish(instance_b, carol, "open")
    try:
        with list_subscriber(instance_a, [carol]) as (ua, d, aor):
            check_each_refresh_once(ua, d, carol, instance_b, database)
    finally:
        second.cleanup()


def check_each_refresh_once(ua, d, carol, instance_b, database):
    """B saw exactly as many SUBSCRIBEs of the dialog as its CSeq says."""
    state_of(ua, d.call_id, carol, lambda g: g["state"] == "active", 5)
    query = "SELECT call_id, cseq, phase FROM pa_rls_backend WHERE resource = %s"
    (call_id, _, _), = database.query(query, (carol,))
    # Two refreshes (about every 8 s), answered (B logged them).
    wait_until(lambda: (lambda row: row[1] >= 3 and row[2] == "established")(
        database.query(query, (carol,))[0]), 25)
    seen = [line for line in instance_b.log().splitlines()
            if "SUBSCRIBE presentity=" in line and f"call-id={call_id}" in line]
    assert len(seen) == database.query(query, (carol,))[0][1], seen


def test_unsubscribing_the_list_ends_the_back_end_subscription(instance_a, instance_b,
                                                               database, b_database):
    carol = f"sip:carol{rand(5)}@b.example"
    with list_subscriber(instance_a, [carol]) as (ua, d, aor):
        state_of(ua, d.call_id, carol, lambda g: g["state"] == "active", 5)
        assert ua.resubscribe(d, 0, headers=LIST_HEADERS).status == 200
        # Found by the sweep (timer_interval: 1 s here), ended upstream.
        wait_until(lambda: database.query("SELECT COUNT(*) FROM pa_rls_backend"
                                          " WHERE resource = %s", (carol,)) == [(0,)], 5)
        wait_until(lambda: b_database.query(
            "SELECT COUNT(*) FROM pa_subscription WHERE presentity = %s"
            " AND expires_at > UNIX_TIMESTAMP()", (carol[4:],)) == [(0,)], 5)


def test_one_node_claims_each_back_end_subscription():
    """The claim against MariaDB: a row another node holds is skipped (SKIP
    LOCKED, no waiting), and a claimed row is leased: no other node takes
    it until the lease ends."""
    from pa_handlers.config import parse_db_url
    from pa_handlers.store import BackEnd, Database
    db = ScratchDatabase()
    try:
        db.query("INSERT INTO pa_rls_backend (resource, event, subscriber, call_id, local_tag)"
                 " VALUES ('sip:c@b.example', 'presence', 'a@a.example', '', '')")
        node1 = BackEnd(Database(parse_db_url(db.url()), 3))
        node2 = BackEnd(Database(parse_db_url(db.url()), 3))
        other = db.connect()
        other.autocommit(False)
        with other.cursor() as cur:
            cur.execute("SELECT id FROM pa_rls_backend FOR UPDATE")
            started = time.monotonic()
            assert node1.claim_due(100, 110, 10) == []
            assert time.monotonic() - started < 1
        other.rollback()
        other.close()
        claimed = node1.claim_due(100, 110, 10)
        assert [c.resource for c in claimed] == ["sip:c@b.example"] and not claimed[0].needed
        assert node2.claim_due(105, 115, 10) == []
        assert [c.resource for c in node2.claim_due(110, 120, 10)] == ["sip:c@b.example"]
    finally:
        db.drop()
