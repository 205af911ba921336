"""Two Kamailio nodes on one MariaDB database: any node serves any
subscription, each event is handled once, and a node that dies is
replaced by the others."""

import os
import signal
import time

import pytest

from conftest import settings
from harness import Kamailio, ScratchDatabase, TcpProxy
from helpers import pidf_body, tuples, wait_answered, wait_until
from multinode import (at, each_expiry_notified_once, publish, together,
                       publish_notifies_watchers_of_another_node,
                       refresh_and_end_through_other_nodes,
                       register_notifies_watchers_of_another_node)


@pytest.fixture(scope="module")
def nodes(database):
    a = Kamailio(settings(database)).start()
    b = Kamailio(settings(database)).start()
    yield a, b
    a.cleanup()
    b.cleanup()


def test_a_publish_at_one_node_notifies_watchers_of_the_other(nodes, presentity, database):
    publish_notifies_watchers_of_another_node(*nodes, presentity, database)


def test_a_register_at_one_node_notifies_watchers_of_the_other(nodes, presentity):
    register_notifies_watchers_of_another_node(*nodes, presentity)


def test_any_node_refreshes_or_ends_a_subscription_and_cseq_keeps_growing(nodes, presentity):
    a, b = nodes
    # The watcher's in-dialog requests reach either node.
    refresh_and_end_through_other_nodes(a, (b, a, b, b, a), b, presentity)


def test_each_expiry_is_notified_exactly_once(nodes, presentity):
    each_expiry_notified_once(nodes, presentity)


def test_a_dead_nodes_timers_are_taken_over(database, presentity):
    a = Kamailio(settings(database)).start()
    b = Kamailio(settings(database)).start()
    watcher, dev = at(b), at(a, user="dev")
    try:
        watcher.server = a.address
        r, on_a = watcher.subscribe(presentity, expires=3)
        assert r.status == 200
        watcher.wait_notify(on_a.call_id)
        watcher.server = b.address
        _, on_b = watcher.subscribe(presentity, expires=600)
        watcher.wait_notify(on_b.call_id)
        assert publish(dev, presentity, pidf_body(presentity, "t", "open"), expires=2).status == 200
        watcher.wait_notify(on_b.call_id, 2)
        # Node A sent that NOTIFY: let it take the answer before it dies
        # (a lost answer would cost notify_timeout, see test_notify_in_flight).
        wait_answered(database, on_b.call_id)
        # The whole node dies at once: main process and children.
        os.killpg(a.proc.pid, signal.SIGKILL)
        a.proc.wait(5)
        # Node B ends A's subscription (NOTIFYs: first, the PUBLISH, the end)
        # and A's publication, on time.
        final = wait_until(lambda: [n for n in watcher.notifies(on_a.call_id)
                                    if n.subscription_state()[0] == "terminated"],
                           timeout=3 + 1 + 3)[0]
        assert final.subscription_state() == ("terminated", {"reason": "timeout"})
        # Some live node (B, or another on this database) did A's work.
        assert f":{a.port};branch=" not in final.get("via")
        closed = wait_until(lambda: [n for n in watcher.notifies(on_b.call_id)
                                     if tuples(n.body) == [("pa-closed", "closed")]][1:],
                            timeout=6)[0]
        assert f":{a.port};branch=" not in closed.get("via")
    finally:
        watcher.close()
        dev.close()
        a.cleanup()
        b.cleanup()


def test_racing_publishers_get_200_or_412_and_nothing_is_lost(nodes, presentity, database):
    """Eight publishers at once, all with the same entity-tag, through both
    nodes: exactly one wins; the document is the winner's."""
    a, b = nodes
    owner = at(a, user="dev")
    try:
        first = publish(owner, presentity, pidf_body(presentity, "t", "open", note="start"))
        etag = first.get("sip-etag")
    finally:
        owner.close()
    answers = {}

    def race(n):
        ua = at(a if n % 2 else b, user="dev")
        try:
            r = publish(ua, presentity, pidf_body(presentity, "t", "open", note=f"racer-{n}"),
                        etag=etag, timeout=10)
            answers[n] = (r.status, r.get("sip-etag"))
        finally:
            ua.close()
    together(race, 8, timeout=20)
    codes = sorted(code for code, _ in answers.values())
    assert codes == [200] + [412] * 7
    [winner] = [n for n, (code, _) in answers.items() if code == 200]
    [(body,)] = database.query("SELECT body FROM pa_document WHERE presentity = %s",
                               (presentity[4:],))
    assert f"racer-{winner}".encode() in body
    assert sum(f"racer-{n}".encode() in body for n in range(8)) == 1
    assert database.query("SELECT etag FROM pa_publication WHERE presentity = %s",
                          (presentity[4:],)) == [(answers[winner][1],)]


# -- the database goes away -------------------------------------------------

@pytest.fixture(scope="module")
def lonely_database():
    """A database no other node works on: during its outage nobody else
    may do the work."""
    db = ScratchDatabase()
    yield db
    db.drop()


@pytest.fixture
def outage(lonely_database):
    """A node whose database connection runs through a proxy we can cut."""
    proxy = TcpProxy(("127.0.0.1", 3306))
    node = Kamailio(settings(lonely_database, db_url=lonely_database.url(port=proxy.port),
                             db_timeout=2), usrloc_db_url=lonely_database.url()).start()
    yield node, proxy
    node.cleanup()
    proxy.cut()


def test_expiries_due_during_an_outage_are_handled_when_it_ends(outage, presentity):
    node, proxy = outage
    watcher = at(node)
    try:
        r, d = watcher.subscribe(presentity, expires=2)
        assert r.status == 200
        watcher.wait_notify(d.call_id)
        proxy.cut()
        time.sleep(4)  # the subscription expires while the database is away
        # (UDP may bring the first NOTIFY twice: count NOTIFYs, not copies.)
        assert {n.cseq for n in watcher.notifies(d.call_id)} == {(1, "NOTIFY")}
        assert node.alive()
        proxy.restore()
        final = watcher.wait_notify(d.call_id, 2, timeout=8)
        assert final.subscription_state() == ("terminated", {"reason": "timeout"})
    finally:
        watcher.close()
    assert "Traceback" not in node.log()


def test_traffic_through_an_outage_never_half_writes(outage, presentity, lonely_database):
    """Requests during the outage fail whole (500), the others succeed
    whole: after it, every stored subscription is complete and every
    answered 200 is stored."""
    node, proxy = outage
    watcher = at(node)
    stored, refused = [], 0
    try:
        for i in range(30):
            if i == 10:
                proxy.cut()
            if i == 20:
                proxy.restore()
                time.sleep(1.2)  # past the pause after a failure
            r, d = watcher.subscribe(presentity, timeout=10)
            if r.status == 200:
                stored.append(d.call_id)
            else:
                assert r.status == 500 and r.get("retry-after")
                refused += 1
        assert refused >= 5 and len(stored) >= 15
        rows = lonely_database.query("SELECT call_id, local_tag, remote_uri, expires_at FROM"
                              " pa_subscription WHERE presentity = %s", (presentity[4:],))
        assert sorted(r[0] for r in rows) == sorted(stored)
        assert all(tag and uri and expires for _, tag, uri, expires in rows)
    finally:
        watcher.close()
