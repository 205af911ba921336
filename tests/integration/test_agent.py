"""The presence agent's entry points called directly, with a real store on
MariaDB: the decisions (replies, NOTIFYs) as plain values."""


import pytest

from pa_handlers.agent import PresenceAgent
from pa_handlers.config import settings_from_mapping
from pa_handlers.messages import Context
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


def test_rejected_watcher_gets_403(make_agent, database):
    presentity = f"u{rand()}@example.com"
    database.query("INSERT INTO pa_watcher (presentity, watcher, presence_domain, event, status,"
                   " reason, updated_at) VALUES (%s, 'alice@example.com', 'registrar', 'presence',"
                   " 'terminated', 'rejected', 0)", (presentity,))
    out = make_agent(auth="implicit").handle_subscription(subscribe(presentity), CTX, "registrar")
    assert out.reply.code == 403 and not out.notifies


def test_ignore_408_on_notify_keeps_the_subscription(make_agent, database):
    agent = make_agent(ignore_408_on_notify=True)
    call_id = rand()
    agent.handle_subscription(subscribe(call_id=call_id), CTX, "registrar")
    agent.handle_notify_reply((call_id, "ourtag", "wt"), 1, 408)
    assert database.query("SELECT last_notify_code FROM pa_subscription WHERE call_id = %s",
                          (call_id,)) == [(408,)]
    agent.handle_notify_reply((call_id, "ourtag", "wt"), 1, 481)
    assert database.query("SELECT 1 FROM pa_subscription WHERE call_id = %s", (call_id,)) == []


def test_an_answer_to_an_older_notify_keeps_the_newest_outstanding(make_agent, database):
    agent = make_agent()
    call_id = rand()
    agent.handle_subscription(subscribe(call_id=call_id), CTX, "registrar")
    agent.handle_subscription(subscribe(call_id=call_id, to_tag="ourtag", cseq=2), CTX, "registrar")
    agent.handle_notify_reply((call_id, "ourtag", "wt"), 1, 200)
    [(since,)] = database.query("SELECT unanswered_since FROM pa_subscription WHERE call_id = %s",
                                (call_id,))
    assert since is not None
    agent.handle_notify_reply((call_id, "ourtag", "wt"), 2, 200)
    assert database.query("SELECT unanswered_since FROM pa_subscription WHERE call_id = %s",
                          (call_id,)) == [(None,)]


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
    agent.clock = lambda: now[0]
    calls = []
    agent.notifier.expire_subscriptions = lambda: calls.append(now[0]) or []
    agent.notifier.drop_unanswered = lambda: None
    for t in range(1000, 1025):
        now[0] = float(t)
        agent.on_timer()
    assert calls == [1000.0, 1010.0, 1020.0]
