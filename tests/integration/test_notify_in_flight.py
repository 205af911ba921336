"""At most one NOTIFY in flight per subscription, across processes and
nodes: changes while one is in flight wait for its answer (or its
deadline), and then the newest state goes out, once.  Only an answer to
the NOTIFY in flight acts on the subscription."""

import random
import socket
import time

import pytest

from conftest import settings
from harness import Kamailio
from helpers import pidf_body, wait_answered, wait_until
from sipua import SipUA, rand
from test_cluster import nodes  # noqa: F401  (two nodes on one database)
from test_metrics import grown, stats

PIDF = "application/pidf+xml"
WATCHERINFO = "application/watcherinfo+xml"


def cseqs(ua, dialog) -> list[int]:
    """The distinct NOTIFYs of a dialog (UDP retransmissions counted once)."""
    return sorted({n.cseq[0] for n in ua.notifies(dialog.call_id)})


def notify_with_cseq(ua, dialog, cseq, timeout=5.0):
    return wait_until(lambda: next((n for n in ua.notifies(dialog.call_id)
                                    if n.cseq[0] == cseq), None), timeout=timeout)


def held(ua, presentity, **kwargs):
    """Subscribe as a slow watcher, one that holds its answers: returns the
    dialog and its first NOTIFY, still in flight."""
    ua.notify_answer = None
    r, d = ua.subscribe(presentity, **kwargs)
    assert r.status == 200
    return d, ua.wait_notify(d.call_id)


def answer(ua, notify):
    """The slow watcher answers at last, and from now on at once."""
    ua.notify_answer = 200
    ua.respond(notify, 200)


class Publisher:
    """A device publishing one document after another (modifications)."""

    def __init__(self, kamailio, presentity):
        self.ua = SipUA(kamailio.address, user="dev")
        self.presentity = presentity
        self.etag = None

    def publish(self, note: str) -> None:
        headers = [("Event", "presence"), ("Content-Type", PIDF)]
        if self.etag:
            headers.append(("SIP-If-Match", self.etag))
        r = self.ua.request("PUBLISH", self.presentity, headers,
                            pidf_body(self.presentity, "t", "open", note=note))
        assert r.status == 200
        self.etag = r.get("sip-etag")

    def close(self):
        self.ua.close()


@pytest.fixture
def publisher(kamailio, presentity):
    p = Publisher(kamailio, presentity)
    yield p
    p.close()


def test_a_burst_waits_for_the_answer_and_the_newest_state_goes_out_once(
        ua, presentity, publisher):
    d, first = held(ua, presentity)
    for n in range(3):
        publisher.publish(f"burst-{n}")
    time.sleep(1.0)
    assert cseqs(ua, d) == [1], "no second NOTIFY while the first is in flight"
    answer(ua, first)
    newest = notify_with_cseq(ua, d, 2)
    assert b"burst-2" in newest.body
    time.sleep(1.0)
    assert cseqs(ua, d) == [1, 2], "the burst costs one NOTIFY"


def test_a_refresh_while_a_notify_is_in_flight_is_notified_after_its_answer(ua, presentity):
    d, first = held(ua, presentity, expires=600)
    r = ua.resubscribe(d, 300)
    assert r.status == 200 and r.get("expires") == "300"
    time.sleep(0.5)
    assert cseqs(ua, d) == [1]
    answer(ua, first)
    state, params = notify_with_cseq(ua, d, 2).subscription_state()
    assert state == "active" and 290 <= int(params["expires"]) <= 300


def test_watcher_info_changes_wait_too_and_come_as_the_whole_list(kamailio, presentity):
    owner = SipUA(kamailio.address, user=presentity[4:].split("@")[0])
    alice, bob = SipUA(kamailio.address, user="alice"), SipUA(kamailio.address, user="bob")
    try:
        w, first = held(owner, presentity, event="presence.winfo",
                        headers=[("Accept", WATCHERINFO)])
        for watcher in (alice, bob):
            assert watcher.subscribe(presentity)[0].status == 200
        time.sleep(1.0)
        assert cseqs(owner, w) == [1]
        answer(owner, first)
        newest = notify_with_cseq(owner, w, 2)
        body = newest.body.decode()
        # Version 1 (the CSeq minus one): no version is skipped, and the
        # whole list stands for the partial updates it replaces.
        assert 'version="1"' in body and 'state="full"' in body
        assert alice.aor in body and bob.aor in body
        time.sleep(1.0)
        assert cseqs(owner, w) == [1, 2]
    finally:
        for u in (owner, alice, bob):
            u.close()


def test_a_notify_in_flight_from_one_node_holds_a_change_at_another(nodes, presentity):
    a, b = nodes
    watcher = SipUA(a.address)
    publisher = Publisher(b, presentity)
    try:
        d, first = held(watcher, presentity)
        assert f":{a.port};branch=" in first.get("via")
        publisher.publish("from-b")
        time.sleep(1.0)
        assert cseqs(watcher, d) == [1], "node B sent nothing while A's NOTIFY was in flight"
        answer(watcher, first)
        newest = notify_with_cseq(watcher, d, 2)
        assert b"from-b" in newest.body
        # The answer reached node A, which sent the newest state.
        assert f":{a.port};branch=" in newest.get("via")
    finally:
        watcher.close()
        publisher.close()


def test_a_notify_whose_answer_was_lost_is_sent_again_with_the_newest_state(
        ua, presentity, publisher, database):
    """As when the node that sent it restarted or died before the answer
    came: the deadline passes, and the newest state goes out once more."""
    ua.notify_answer = lambda m: None if m.cseq[0] == 1 else 200
    _, d = ua.subscribe(presentity)
    ua.wait_notify(d.call_id)
    publisher.publish("meanwhile")
    # notify_timeout is 3 s in the test settings, the timer runs every second.
    again = notify_with_cseq(ua, d, 2, timeout=8)
    assert b"meanwhile" in again.body
    wait_until(lambda: database.query("SELECT notify_deadline, notify_retry FROM"
                                      " pa_subscription WHERE call_id = %s",
                                      (d.call_id,)) == [(0, 0)])


@pytest.fixture(scope="module")
def tolerant(database):
    """A node that keeps subscriptions whose NOTIFYs time out."""
    k = Kamailio(settings(database, ignore_408_on_notify=True, notify_timeout=2)).start()
    yield k
    k.cleanup()


def test_a_notify_never_answered_does_not_wedge_the_subscription(tolerant, presentity):
    watcher = SipUA(tolerant.address)
    publisher = Publisher(tolerant, presentity)
    try:
        d, _ = held(watcher, presentity)   # never answered
        publisher.publish("while-unanswered")
        # notify_timeout 2 s, timer every second: the newest state goes out
        # without an answer.
        newest = notify_with_cseq(watcher, d, 2, timeout=6)
        assert b"while-unanswered" in newest.body
    finally:
        watcher.close()
        publisher.close()


@pytest.fixture(scope="module")
def patient(database):
    """Waits long for answers: nothing is sent again during a test."""
    k = Kamailio(settings(database, notify_timeout=60)).start()
    yield k
    k.cleanup()


def test_watchers_that_never_answer_cost_one_notify_each(patient, presentity):
    """The flood of the hardening issue, scaled down: subscriptions whose
    Contact never answers, then PUBLISHes.  Each PUBLISH used to send a
    NOTIFY to every one of them, each a transaction in Kamailio's shared
    memory for 32 s; now only the first NOTIFY of each is in flight."""
    blackhole = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)   # never read
    blackhole.bind(("127.0.0.1", 0))
    attacker = SipUA(patient.address, user="attacker")
    attacker.contact = f"sip:dead@127.0.0.1:{blackhole.getsockname()[1]}"
    publisher = Publisher(patient, presentity)
    try:
        before = stats(patient)
        for _ in range(50):
            assert attacker.subscribe(presentity)[0].status == 200
        for n in range(4):
            publisher.publish(f"change {n}")
        time.sleep(1.0)
        assert grown(before, stats(patient), "pa_notify_sent") == 50
    finally:
        attacker.close()
        publisher.close()
        blackhole.close()


# -- answers that answer nothing we sent ------------------------------------

def forged_answer(kamailio, code, call_id, from_tag, to_tag, cseq, branch=None):
    """A final answer to a NOTIFY, sent to Kamailio from elsewhere."""
    branch = branch or "z9hG4bK" + rand(12)
    message = (f"SIP/2.0 {code} Forged\r\n"
               f"Via: SIP/2.0/UDP 127.0.0.1:{kamailio.port};branch={branch}\r\n"
               f"From: <sip:x@127.0.0.1>;tag={from_tag}\r\nTo: <sip:y@127.0.0.1>;tag={to_tag}\r\n"
               f"Call-ID: {call_id}\r\nCSeq: {cseq} NOTIFY\r\nContent-Length: 0\r\n\r\n")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(message.encode(), kamailio.address)


def subscription_exists(database, call_id) -> bool:
    return bool(database.query("SELECT 1 FROM pa_subscription WHERE call_id = %s", (call_id,)))


def test_a_forged_481_matching_no_transaction_leaves_the_subscription(
        kamailio, database, ua, presentity, publisher):
    _, d = ua.subscribe(presentity)
    first = ua.wait_notify(d.call_id)
    # Right Call-ID and tags (ours in From, the watcher's in To), a CSeq we
    # never sent.
    forged_answer(kamailio, 481, d.call_id, first.tag("from"), d.local_tag, 999)
    time.sleep(1.0)
    assert subscription_exists(database, d.call_id)
    # The CSeq of the NOTIFY answered already, a branch no transaction has.
    wait_answered(database, d.call_id)
    forged_answer(kamailio, 481, d.call_id, first.tag("from"), d.local_tag, 1)
    time.sleep(1.0)
    assert subscription_exists(database, d.call_id)
    publisher.publish("still-watched")
    assert b"still-watched" in ua.wait_notify(d.call_id, 2).body


def test_a_forged_481_for_the_notify_in_flight_leaves_it_in_flight(
        kamailio, database, ua, presentity):
    d, first = held(ua, presentity)
    # Everything right but the Via branch, which only the watcher saw.
    forged_answer(kamailio, 481, d.call_id, first.tag("from"), d.local_tag, 1,
                  branch="z9hG4bK" + str(random.getrandbits(64)))
    time.sleep(1.0)
    assert subscription_exists(database, d.call_id)
    answer(ua, first)
    wait_answered(database, d.call_id)
