"""The presence agent's entry points called directly, with a real store on
MariaDB: the decisions (replies, NOTIFYs) as plain values."""

import dataclasses
import time

import pytest

from pa_handlers.agent import PresenceAgent
from pa_handlers.config import settings_from_mapping
from pa_handlers.messages import Context
from pa_handlers.registration import Binding
from pa_handlers.store import Database, Store
from sipua import rand

CTX = Context(local_tag="ourtag", socket="udp:127.0.0.1:5060",
              local_contact="sip:127.0.0.1:5060;transport=udp", source="udp:127.0.0.1:5555")


@pytest.fixture
def make_agent(database):
    def make(**extra):
        values = dict(db_url=database.url(), auth="none", min_expires=2)
        values.update(extra)
        settings = settings_from_mapping(values)
        return PresenceAgent(settings, Store(Database(settings.db_url, settings.db_timeout)))
    return make


def subscribe(presentity="bob@example.com", watcher="alice@example.com", expires=600,
              to_tag="", cseq=1, call_id=None, extra=""):
    to = f"<sip:{presentity}>" + (f";tag={to_tag}" if to_tag else "")
    return (f"SUBSCRIBE sip:{presentity} SIP/2.0\r\n"
            "Via: SIP/2.0/UDP 127.0.0.1:5555;branch=z9hG4bK1\r\n"
            f"From: <sip:{watcher}>;tag=wt\r\nTo: {to}\r\n"
            f"Call-ID: {call_id or rand()}\r\nCSeq: {cseq} SUBSCRIBE\r\n"
            "Contact: <sip:alice@127.0.0.1:5555>\r\nEvent: presence\r\n"
            f"Expires: {expires}\r\n{extra}Content-Length: 0\r\n\r\n").encode()


def test_initial_subscribe_decides_reply_and_notify(make_agent):
    out = make_agent().handle_subscription(subscribe(), CTX, "registrar")
    assert out.reply.code == 200
    assert dict(out.reply.headers) == {"Expires": "600",
                                       "Contact": "<sip:127.0.0.1:5060;transport=udp>"}
    [notify] = out.notifies
    assert notify.ruri == "sip:alice@127.0.0.1:5555"
    assert notify.socket == CTX.socket
    assert "From: <sip:bob@example.com>;tag=ourtag\r\n" in notify.headers
    assert "<basic>closed</basic>" in notify.body


def test_unknown_domain_is_an_error_not_a_namespace(make_agent, caplog):
    out = make_agent().handle_subscription(subscribe(), CTX, "regstrar")
    assert out.reply.code == 500 and not out.notifies
    assert "unknown domain 'regstrar'" in caplog.text


def test_domains_are_separate_namespaces(make_agent, database):
    agent = make_agent()
    presentity = f"u{rand()}@example.com"
    for domain in ("registrar", "jabber"):
        assert agent.handle_subscription(subscribe(presentity), CTX, domain).reply.code == 200
    assert sorted(database.query("SELECT presence_domain FROM pa_subscription WHERE presentity = %s",
                                 (presentity,))) == [("jabber",), ("registrar",)]


def test_implicit_auth_makes_new_watchers_pending_with_bodyless_notify(make_agent):
    out = make_agent(auth="implicit").handle_subscription(subscribe(f"u{rand()}@example.com"),
                                                          CTX, "registrar")
    assert out.reply.code == 200
    [notify] = out.notifies
    assert "Subscription-State: pending;expires=600" in notify.headers
    assert notify.body == "" and "Content-Type" not in notify.headers


def test_implicit_auth_lets_a_presentity_watch_itself(make_agent):
    me = f"u{rand()}@example.com"
    out = make_agent(auth="implicit").handle_subscription(subscribe(me, watcher=me), CTX,
                                                          "registrar")
    assert "Subscription-State: active" in out.notifies[0].headers


def test_winfo_auth_none_lets_anyone_watch_the_watchers(make_agent):
    p = f"u{rand()}@example.com"
    winfo = subscribe(p, extra="Accept: application/watcherinfo+xml\r\n").replace(
        b"Event: presence", b"Event: presence.winfo")
    assert make_agent(winfo_auth="implicit").handle_subscription(
        winfo, CTX, "registrar").reply.code == 403
    out = make_agent(winfo_auth="none").handle_subscription(winfo, CTX, "registrar")
    assert out.reply.code == 200
    assert "application/watcherinfo+xml" in out.notifies[0].headers


def test_implicit_decisions_are_kept_and_reevaluated(make_agent, database):
    agent = make_agent(auth="implicit")
    p = f"u{rand()}@example.com"
    call_id = rand()
    out = agent.handle_subscription(subscribe(p, call_id=call_id), CTX, "registrar")
    assert "pending" in out.notifies[0].headers
    database.query("INSERT INTO pa_watcher (presentity, watcher, presence_domain, event, status,"
                   " updated_at) VALUES (%s, 'alice@example.com', 'registrar', 'presence',"
                   " 'active', 0)", (p,))
    # The first NOTIFY is still in flight: the approval waits for its answer.
    assert agent.notifier.reauthorize(p) == []
    [approved] = agent.handle_notify_reply((call_id, "ourtag", "wt"), 1, 200)
    assert "Subscription-State: active" in approved.headers and "<presence" in approved.body
    assert "CSeq: 2 NOTIFY" in approved.headers


def test_rejected_watcher_gets_403(make_agent, database):
    presentity = f"u{rand()}@example.com"
    database.query("INSERT INTO pa_watcher (presentity, watcher, presence_domain, event, status,"
                   " reason, updated_at) VALUES (%s, 'alice@example.com', 'registrar', 'presence',"
                   " 'terminated', 'rejected', 0)", (presentity,))
    out = make_agent(auth="implicit").handle_subscription(subscribe(presentity), CTX, "registrar")
    assert out.reply.code == 403 and not out.notifies


def test_politely_blocked_watcher_sees_active_and_nothing(make_agent, database):
    presentity = f"u{rand()}@example.com"
    database.query("INSERT INTO pa_watcher (presentity, watcher, presence_domain, event, status,"
                   " reason, updated_at) VALUES (%s, 'alice@example.com', 'registrar', 'presence',"
                   " 'polite-block', '', 0)", (presentity,))
    out = make_agent(auth="implicit").handle_subscription(subscribe(presentity), CTX, "registrar")
    assert out.reply.code == 200
    [notify] = out.notifies
    assert "Subscription-State: active;" in notify.headers
    assert "<tuple" in notify.body and "<basic>closed</basic>" in notify.body


def watch(agent, presentity, domain="registrar"):
    """Subscribe and answer the first NOTIFY, as a watcher does: until that
    answer, a change would wait for it (one NOTIFY in flight)."""
    call_id = rand()
    out = agent.handle_subscription(subscribe(presentity, call_id=call_id), CTX, domain)
    assert agent.handle_notify_reply((call_id, "ourtag", "wt"), 1, 200) == []
    return out


def in_flight(database, call_id):
    """(CSeq of the last NOTIFY, its deadline or 0, dirty) of a subscription."""
    return database.query("SELECT local_cseq, notify_deadline, notify_dirty FROM pa_subscription"
                          " WHERE call_id = %s", (call_id,))


def test_ignore_408_on_notify_keeps_the_subscription(make_agent, database):
    now = [time.time()]
    agent = make_agent(ignore_408_on_notify=True, notify_timeout=30)
    agent.clock.source = lambda: now[0]   # the one clock of every role
    call_id = rand()
    dialog = (call_id, "ourtag", "wt")
    agent.handle_subscription(subscribe(call_id=call_id), CTX, "registrar")
    assert agent.handle_notify_reply(dialog, 1, 408) == []
    assert database.query("SELECT last_notify_code FROM pa_subscription WHERE call_id = %s",
                          (call_id,)) == [(408,)]
    # Its next NOTIFY (a refresh) goes unanswered: the subscription stays,
    # and stops waiting for the answer.
    refresh = agent.handle_subscription(subscribe(call_id=call_id, to_tag="ourtag", cseq=2),
                                        CTX, "registrar")
    assert [n.cseq for n in refresh.notifies] == [2]
    now[0] += 31
    assert agent.notifier.notify_unanswered()[0] == []
    assert in_flight(database, call_id) == [(2, 0, 0)]
    agent.handle_notify_reply(dialog, 2, 481)
    assert in_flight(database, call_id) == [(2, 0, 0)], "481 to a NOTIFY no longer in flight"


def test_answers_to_notify(make_agent, database):
    """A success writes only that the NOTIFY was answered; a failure that
    leaves the watcher in place is recorded; an unanswered NOTIFY, sent
    again and unanswered again, ends the subscription."""
    now = [time.time()]
    agent = make_agent(notify_timeout=30)
    agent.clock.source = lambda: now[0]   # the one clock of every role
    call_id = rand()
    agent.handle_subscription(subscribe(call_id=call_id), CTX, "registrar")
    dialog = (call_id, "ourtag", "wt")
    row = "SELECT last_notify_code FROM pa_subscription WHERE call_id = %s"
    assert in_flight(database, call_id) == [(1, int(now[0]) + 30, 0)]
    agent.handle_notify_reply(dialog, 1, 200)
    assert database.query(row, (call_id,)) == [(None,)]
    assert in_flight(database, call_id) == [(1, 0, 0)]
    refresh = subscribe(call_id=call_id, to_tag="ourtag", cseq=2)
    assert [n.cseq for n in agent.handle_subscription(refresh, CTX, "registrar").notifies] == [2]
    agent.handle_notify_reply(dialog, 2, 500)
    assert database.query(row, (call_id,)) == [(500,)]
    refresh = subscribe(call_id=call_id, to_tag="ourtag", cseq=3)
    assert [n.cseq for n in agent.handle_subscription(refresh, CTX, "registrar").notifies] == [3]
    now[0] += 29
    agent.notifier.notify_unanswered()
    assert in_flight(database, call_id) == [(3, int(now[0]) + 1, 0)]
    # Unanswered: sent once more (its answer may have been lost with the
    # node that sent it), then the subscription ends.
    now[0] += 2
    [again] = [n for n in agent.notifier.notify_unanswered()[0] if n.dialog == dialog]
    assert again.cseq == 4 and "Subscription-State: active" in again.headers
    now[0] += 31
    agent.notifier.notify_unanswered()
    assert database.query(row, (call_id,)) == []


def test_answers_collected_over_a_moment_end_together(make_agent, database):
    """The answers Kamailio's workers queued: the clean ones end in one
    round trip, a subscription that changed meanwhile gets its newest
    state, an answer to nothing in flight changes nothing."""
    agent = make_agent()
    p = f"u{rand()}@example.com"
    call_ids = [rand() for _ in range(3)]
    for call_id in call_ids:
        agent.handle_subscription(subscribe(p, call_id=call_id), CTX, "registrar")
    # A change while the three first NOTIFYs are in flight: nothing is sent.
    assert agent.handle_publish(publish(p, doc(p, "t", "open")), CTX, "registrar").notifies == []
    # Two watchers answer at once, one of them twice (a stray answer).
    answers = [((call_ids[0], "ourtag", "wt"), 1), ((call_ids[1], "ourtag", "wt"), 1),
               ((call_ids[1], "ourtag", "wt"), 7)]
    newest = agent.handle_notify_answers(answers)
    assert sorted((n.call_id, n.cseq) for n in newest) == sorted([(call_ids[0], 2),
                                                                 (call_ids[1], 2)])
    assert all("<basic>open</basic>" in n.body for n in newest)
    assert [in_flight(database, c)[0][2] for c in call_ids] == [0, 0, 1]
    # Answered, and unchanged since: the wait ends, nothing more is sent.
    assert agent.handle_notify_answers([((c, "ourtag", "wt"), 2) for c in call_ids[:2]]) == []
    assert [in_flight(database, c)[0][1] for c in call_ids[:2]] == [0, 0]


def test_an_approval_while_a_notify_is_in_flight_still_reaches_the_watcher_list(
        make_agent, database):
    agent = make_agent(auth="implicit")
    p = f"u{rand()}@example.com"
    owner = rand()
    winfo = subscribe(p, watcher=p, call_id=owner,
                      extra="Accept: application/watcherinfo+xml\r\n").replace(
        b"Event: presence", b"Event: presence.winfo")
    agent.handle_subscription(winfo, CTX, "registrar")
    agent.handle_notify_reply((owner, "ourtag", "wt"), 1, 200)
    alice = rand()
    [pending, new_watcher] = agent.handle_subscription(subscribe(p, call_id=alice), CTX,
                                                       "registrar").notifies
    agent.handle_notify_reply((owner, "ourtag", "wt"), new_watcher.cseq, 200)
    database.query("INSERT INTO pa_watcher (presentity, watcher, presence_domain, event, status,"
                   " updated_at) VALUES (%s, 'alice@example.com', 'registrar', 'presence',"
                   " 'active', 0)", (p,))
    # Alice's first NOTIFY is still in flight: hers waits, her owner's list
    # learns of the approval at once.
    [approved] = agent.notifier.reauthorize(p)
    assert approved.call_id == owner and 'event="approved"' in approved.body
    [active] = agent.handle_notify_reply((alice, "ourtag", "wt"), 1, 200)
    assert "Subscription-State: active" in active.headers


def test_an_unexpected_failure_is_a_logged_500(make_agent, caplog):
    agent = make_agent()

    def broken(*args):
        raise RuntimeError("boom")
    agent.notifier.subscribe = broken
    out = agent.handle_subscription(subscribe(), CTX, "registrar")
    assert out.reply.code == 500
    assert "handle_subscription failed" in caplog.text and "boom" in caplog.text


def test_garbage_is_a_400(make_agent):
    out = make_agent().handle_subscription(b"\x00\xffgarbage", CTX, "registrar")
    assert out.reply.code == 400


def test_timer_sweeps_only_every_timer_interval(make_agent):
    now = [1000.0]
    agent = make_agent(timer_interval=10)
    agent.clock.source = lambda: now[0]
    calls = []
    agent.notifier.expire_subscriptions = lambda: calls.append(now[0]) or []
    for t in range(1000, 1025):
        now[0] = float(t)
        agent.on_timer()
    assert calls == [1000.0, 1010.0, 1020.0]


def publish(presentity="bob@example.com", body=b"", etag=None, expires=600, contact=None):
    headers = f"SIP-If-Match: {etag}\r\n" if etag else ""
    if body:
        headers += "Content-Type: application/pidf+xml\r\n"
    if contact:
        headers += f"Contact: {contact}\r\n"
    return (f"PUBLISH sip:{presentity} SIP/2.0\r\n"
            "Via: SIP/2.0/UDP 127.0.0.1:5555;branch=z9hG4bK1\r\n"
            f"From: <sip:{presentity}>;tag=pt\r\nTo: <sip:{presentity}>\r\n"
            f"Call-ID: {rand()}\r\nCSeq: 1 PUBLISH\r\nEvent: presence\r\nExpires: {expires}\r\n"
            f"{headers}Content-Length: {len(body)}\r\n\r\n").encode() + body


def doc(presentity, tuple_id, basic):
    return (f'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:{presentity}">'
            f'<tuple id="{tuple_id}"><status><basic>{basic}</basic></status></tuple>'
            "</presence>").encode()


def test_publish_without_an_authenticated_identity_is_refused_when_auth_is_on(make_agent, caplog):
    p = f"u{rand()}@example.com"
    out = make_agent(auth="implicit").handle_publish(publish(p, doc(p, "t", "open")), CTX,
                                                     "registrar")
    assert out.reply.code == 403
    assert "set $avp(pa_publisher)" in caplog.text
    mine = dataclasses.replace(CTX, publisher=f"sip:{p}")
    assert make_agent(auth="implicit").handle_publish(publish(p, doc(p, "t", "open")), mine,
                                                      "registrar").reply.code == 200


def test_a_device_is_known_by_its_sip_instance(make_agent, database):
    agent = make_agent()
    p = f"u{rand()}@example.com"
    phone = '<sip:bob@10.0.0.1:5060>;+sip.instance="<urn:uuid:1111>"'
    moved = '<sip:bob@10.9.9.9:5999>;+sip.instance="<urn:uuid:1111>"'
    other = '<sip:bob@10.0.0.2:5060>;+sip.instance="<urn:uuid:2222>"'
    for contact in (phone, other, moved):
        out = agent.handle_publish(publish(p, doc(p, "t", "open"), contact=contact), CTX,
                                   "registrar")
        assert out.reply.code == 200
    assert sorted(database.query("SELECT source FROM pa_publication WHERE presentity = %s",
                                 (p,))) == [("instance:<urn:uuid:1111>",),
                                            ("instance:<urn:uuid:2222>",)]


def test_publish_fans_out_only_when_the_document_changes(make_agent):
    agent = make_agent()
    p = f"u{rand()}@example.com"
    watch(agent, p)
    first = agent.handle_publish(publish(p, doc(p, "t", "open")), CTX, "registrar")
    assert len(first.notifies) == 1
    etag = dict(first.reply.headers)["SIP-ETag"]
    same = agent.handle_publish(publish(p, doc(p, "t", "open"), etag=etag), CTX, "registrar")
    assert same.reply.code == 200 and same.notifies == []
    etag = dict(same.reply.headers)["SIP-ETag"]
    refresh = agent.handle_publish(publish(p, etag=etag), CTX, "registrar")
    assert refresh.reply.code == 200 and refresh.notifies == []


def test_initial_publish_with_expires_zero_stores_nothing(make_agent, database):
    p = f"u{rand()}@example.com"
    out = make_agent().handle_publish(publish(p, doc(p, "t", "open"), expires=0), CTX,
                                      "registrar")
    assert out.reply.code == 200 and dict(out.reply.headers) == {"Expires": "0"}
    assert database.query("SELECT 1 FROM pa_publication WHERE presentity = %s", (p,)) == []


def test_two_timers_expiring_one_publication_make_one_change(make_agent, database):
    """Two timers (processes or nodes) sweeping the same expired
    publication: one document change, one fan-out."""
    a, b = make_agent(), make_agent()
    p = f"u{rand()}@example.com"
    watch(a, p)
    [notify] = a.handle_publish(publish(p, doc(p, "t", "open"), expires=2), CTX,
                                "registrar").notifies
    a.handle_notify_reply(notify.dialog, notify.cseq, 200)
    later = lambda: time.time() + 5  # noqa: E731
    a.clock.source = later
    b.clock.source = later
    notifies = (a.compositor.expire_publications(a.registrations.on_expiry)
                + b.compositor.expire_publications(b.registrations.on_expiry))
    assert len(notifies) == 1
    assert "<basic>closed</basic>" in notifies[0].body


def test_registrations_feed_only_their_own_domain(make_agent):
    agent = make_agent()
    p = f"u{rand()}@example.com"
    notifies = agent.handle_registration("registrar", f"sip:{p}", [
        Binding("sip:u@10.0.0.1:5060", 0.9, int(time.time()) + 60, "ruid-1")])
    assert notifies == []  # nobody watches yet
    seen = {}
    for domain in ("registrar", "jabber"):
        out = agent.handle_subscription(subscribe(p, call_id=rand()), CTX, domain)
        seen[domain] = out.notifies[0].body
    assert 'priority="0.9">sip:u@10.0.0.1:5060</contact>' in seen["registrar"]
    assert "pa-closed" in seen["jabber"] and "10.0.0.1" not in seen["jabber"]


def test_a_registration_for_an_unknown_domain_is_logged_not_stored(make_agent, database, caplog):
    p = f"u{rand()}@example.com"
    make_agent().handle_registration("registrr", f"sip:{p}", [
        Binding("sip:u@10.0.0.1", None, int(time.time()) + 60, "r")])
    assert "unknown domain 'registrr'" in caplog.text
    assert database.query("SELECT 1 FROM pa_publication WHERE presentity = %s", (p,)) == []


def test_each_request_is_one_log_line_with_its_answer(make_agent, caplog):
    caplog.set_level("INFO", logger="pa")
    agent = make_agent()
    agent.handle_subscription(subscribe(call_id="log-1"), CTX, "registrar")
    agent.handle_subscription(subscribe(call_id="log-2", extra="Event: conference\r\n"
                                        ).replace(b"Event: presence\r\n", b""),
                              CTX, "registrar")
    agent.handle_subscription(b"SUBSCRIBE nonsense\r\n\r\n", CTX, "registrar")
    lines = [r.getMessage() for r in caplog.records if r.name == "pa"]
    assert lines == [
        "SUBSCRIBE presentity=bob@example.com watcher=alice@example.com answer=200"
        " call-id=log-1 (presence, active, expires 600)",
        "SUBSCRIBE presentity=bob@example.com watcher=alice@example.com answer=489"
        " call-id=log-2 (Bad Event)",
        "? presentity=- watcher=- answer=400 call-id=- (Bad Request Line)"]


def test_a_database_outage_is_one_error_line_without_traceback(make_agent, caplog):
    caplog.set_level("INFO", logger="pa")
    agent = make_agent(db_url="mysql://nobody:x@127.0.0.1:1/none", db_timeout=0.5)
    out = agent.handle_subscription(subscribe(call_id="log-3"), CTX, "registrar")
    assert out.reply.code == 500
    assert not any(r.exc_info for r in caplog.records)
    assert [r.levelname for r in caplog.records] == ["ERROR", "INFO"]
    assert "Connection refused" in caplog.records[0].getMessage()
    assert "answer=500 call-id=log-3 (database unavailable)" in caplog.text
