"""What several Kamailio nodes on one database must do, whatever the
database: test_cluster.py runs these on one MariaDB, test_galera.py on a
Galera cluster with each node on a different Galera node."""

import time

from helpers import pidf_body, tuples, wait_answered
from sipua import SipUA

PIDF = "application/pidf+xml"


def publish(ua, presentity, body, etag=None, expires=None, timeout=5.0):
    headers = [("Event", "presence")]
    if body:
        headers.append(("Content-Type", PIDF))
    if etag:
        headers.append(("SIP-If-Match", etag))
    if expires is not None:
        headers.append(("Expires", str(expires)))
    return ua.request("PUBLISH", presentity, headers, body, timeout=timeout)


def at(node, **kw) -> SipUA:
    """A test UA sending to `node`."""
    return SipUA(node.address, **kw)


def publish_notifies_watchers_of_another_node(a, b, presentity, database) -> None:
    """A watcher subscribed through node A is notified of a PUBLISH that
    reaches node B, by B, in the dialog A created."""
    watcher, publisher = at(a), at(b, user="dev")
    try:
        _, d = watcher.subscribe(presentity)
        watcher.wait_notify(d.call_id)
        # Node A has the answer (else A sends the change after it).
        wait_answered(database, d.call_id)
        assert publish(publisher, presentity, pidf_body(presentity, "t", "open")).status == 200
        n = watcher.wait_notify(d.call_id, 2)
        assert tuples(n.body) == [("t", "open")]
        assert f":{b.port};branch=" in n.get("via")
        assert n.tag("from") == d.remote_tag
    finally:
        watcher.close()
        publisher.close()


def register_notifies_watchers_of_another_node(a, b, presentity) -> None:
    watcher, phone = at(a), at(b, user=presentity[4:].split("@")[0])
    try:
        _, d = watcher.subscribe(presentity)
        watcher.wait_notify(d.call_id)
        assert phone.register(presentity).status == 200
        assert b"<basic>open</basic>" in watcher.wait_notify(d.call_id, 2).body
    finally:
        watcher.close()
        phone.close()


def refresh_and_end_through_other_nodes(first, refreshes, last, presentity) -> None:
    """A subscription made at `first`, refreshed at each of `refreshes` in
    turn and ended at `last`: every NOTIFY's CSeq one above the one
    before, whichever node sent it."""
    watcher = at(first)
    try:
        _, d = watcher.subscribe(presentity)
        watcher.wait_notify(d.call_id)
        for n, node in enumerate(refreshes):
            d.target = f"sip:127.0.0.1:{node.port}"
            watcher.server = node.address
            assert watcher.resubscribe(d, 600).status == 200
            # Its NOTIFY (after the answer to the one before, at whichever
            # node sent that) before the next refresh.
            watcher.wait_notify(d.call_id, n + 2)
        d.target = f"sip:127.0.0.1:{last.port}"
        watcher.server = last.address
        assert watcher.resubscribe(d, 0).status == 200
        count = len(refreshes) + 2
        final = watcher.wait_notify(d.call_id, count)
        assert final.subscription_state() == ("terminated", {"reason": "timeout"})
        assert [n.cseq[0] for n in watcher.notifies(d.call_id)] == list(range(1, count + 1))
    finally:
        watcher.close()


def each_expiry_notified_once(nodes, presentity, count: int = 20) -> None:
    """Every node's timer sweeps the same table: every expired subscription
    gets one final NOTIFY (one CSeq after the first), from one of them."""
    watcher = at(nodes[0])
    try:
        dialogs = []
        for i in range(count):
            watcher.server = nodes[i % len(nodes)].address
            r, d = watcher.subscribe(presentity, expires=2)
            assert r.status == 200
            dialogs.append(d)
        time.sleep(5)
        finals = [[n for n in watcher.notifies(d.call_id)
                   if n.subscription_state()[0] == "terminated"] for d in dialogs]
        # (UDP may bring a NOTIFY twice: count CSeqs, not copies.)
        assert [len({n.cseq for n in f}) for f in finals] == [1] * count
        assert [len({n.cseq for n in watcher.notifies(d.call_id)})
                for d in dialogs] == [2] * count
        senders = {f[0].get("via").split(";")[0].rsplit(":", 1)[1] for f in finals}
        assert senders <= {str(k.port) for k in nodes}
    finally:
        watcher.close()


def together(work, count: int, timeout: float) -> None:
    """work(0) ... work(count - 1), each in a thread of its own, at once;
    returns when all are done (or `timeout` passed for each)."""
    import threading
    threads = [threading.Thread(target=work, args=(n,)) for n in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
