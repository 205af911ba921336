"""Several Kamailio nodes on a three-node MariaDB Galera cluster
(tests/galera.py), each attached to a different Galera node: what
test_cluster.py shows on one database holds on Galera too, with conflicts
between nodes (certification failures) retried and never seen by a client,
reads that see what another node just committed (db_sync_wait), and a
Galera node killed under traffic.

Run alone: tox -- -m galera"""

import os
import subprocess
import sys
import threading
import time

import pymysql
import pytest

from conftest import settings
from galera import galera_cluster  # noqa: F401  (the fixture)
from harness import ROOT, Kamailio, ScratchDatabase
from helpers import pidf_body, tuples, wait_answered
from multinode import (at, each_expiry_notified_once, publish, together,
                       publish_notifies_watchers_of_another_node,
                       refresh_and_end_through_other_nodes,
                       register_notifies_watchers_of_another_node)
from pa_handlers.config import parse_db_url
from pa_handlers.store import Database, StoreUnavailable
from sipua import rand

pytestmark = pytest.mark.galera

# Causal reads for reads, updates, deletes and inserts (see the README: a
# transaction waits at its first statement only, which may be an INSERT).
SYNC_WAIT = int(os.environ.get("PA_TEST_GALERA_SYNC_WAIT", "7"))


class GaleraDatabase(ScratchDatabase):
    """A scratch database on the cluster, reached through any of its nodes."""

    def __init__(self, cluster):
        self.cluster = cluster
        super().__init__(server=cluster.nodes[0])

    def url_from(self, first: int, failover: bool = True) -> str:
        """The url of a node attached to Galera node `first`: that node,
        then (failover) the others in order."""
        nodes = self.cluster.nodes
        order = [nodes[(first + i) % len(nodes)] for i in range(len(nodes) if failover else 1)]
        hosts = ",".join(f"127.0.0.1:{n.port}" for n in order)
        return f"mysql://{self.user}:{self.password}@{hosts}/{self.name}"

    def query_on(self, index: int, sql: str, args=()) -> list[tuple]:
        """A query through one Galera node, seeing every commit the cluster
        made before it (causal read)."""
        with pymysql.connect(host="127.0.0.1", port=self.cluster.nodes[index].port,
                             user=self.user, password=self.password, database=self.name,
                             autocommit=True) as conn, conn.cursor() as cur:
            cur.execute("SET SESSION wsrep_sync_wait = 1")
            cur.execute(sql, args)
            return list(cur.fetchall())

    def _admin(self):
        # Through a node that runs (one may have been killed).
        return next(n for n in self.cluster.nodes if n.running()).admin()


@pytest.fixture(scope="module")
def gdb(galera_cluster):
    db = GaleraDatabase(galera_cluster)
    yield db
    db.drop()


def node_settings(gdb, index, **extra):
    return settings(gdb, db_url=gdb.url_from(index), db_sync_wait=SYNC_WAIT, **extra)


def start_node(gdb, index, **extra) -> Kamailio:
    """A Kamailio attached to Galera node `index` (its registrar too)."""
    return Kamailio(node_settings(gdb, index, **extra),
                    usrloc_db_url=gdb.url_from(index, failover=False)).start()


@pytest.fixture(scope="module")
def nodes(gdb):
    """Three Kamailio nodes, the first on Galera node 1, the second on 2,
    the third on 3."""
    started = [start_node(gdb, i) for i in range(3)]
    yield started
    logs = [k.log() for k in started]
    for k in started:
        k.cleanup()
    assert not any("Traceback" in log for log in logs)


def retries(nodes) -> int:
    """Transactions run again after a conflict, summed over the nodes."""
    total = 0
    for k in nodes:
        out = k.rpc("stats.get_statistics", "pa_db_retries")
        total += int(out.rsplit("=", 1)[1].strip())
    return total


# -- the store's transactions on Galera ---------------------------------------

def test_transactions_through_two_galera_nodes_never_half_commit(gdb):
    """Four clients through two Galera nodes increment one counter and log
    each increment, in one transaction of two writes each: conflicts abort
    some (certification failures, retried), and what was acknowledged is
    exactly what the cluster holds, no more (a half-commit adds a counter
    step or a log row nobody was told of), no less."""
    gdb.query("CREATE TABLE counter (id INT PRIMARY KEY, v INT NOT NULL)")
    gdb.query("CREATE TABLE counter_log (who INT, n INT, PRIMARY KEY (who, n))")
    gdb.query("INSERT INTO counter VALUES (1, 0)")
    acknowledged, failed = [], []
    retried = {}        # client -> its transactions run again so far

    def client(who):
        db = Database(parse_db_url(gdb.url_from(who % 2, failover=False)), timeout=5,
                      sync_wait=SYNC_WAIT)
        try:
            # 40 transactions, and more (up to 400) until conflicts came:
            # how often two nodes collide depends on the machine's load.
            for n in range(400):
                if n >= 40 and sum(retried.values()) >= 5:
                    break
                try:
                    db.transaction(lambda tx: tx.batch(
                        ("UPDATE counter SET v = v + 1 WHERE id = 1", ()),
                        ("INSERT INTO counter_log VALUES (%s, %s)", (who, n)), commit=True))
                    acknowledged.append((who, n))
                except StoreUnavailable:
                    failed.append((who, n))
                retried[who] = db.retries
        finally:
            db.discard()
    together(client, 4, timeout=120)
    assert sum(retried.values()) > 0, "no conflict happened: the test proves nothing"
    for node in range(3):
        [(counter,)] = gdb.query_on(node, "SELECT v FROM counter")
        logged = gdb.query_on(node, "SELECT who, n FROM counter_log")
        assert counter == len(acknowledged)
        assert sorted(logged) == sorted(acknowledged)
    # Retried with a few attempts and a pause: nearly all get through.
    assert len(failed) <= max(4, len(acknowledged) // 50), failed


# -- what two nodes do on one database, on Galera ------------------------------

def test_a_publish_at_one_node_notifies_watchers_of_another(nodes, presentity, gdb):
    publish_notifies_watchers_of_another_node(nodes[0], nodes[1], presentity, gdb)


def test_a_register_at_one_node_notifies_watchers_of_another(nodes, presentity):
    register_notifies_watchers_of_another_node(nodes[0], nodes[2], presentity)


def test_refresh_and_unsubscribe_through_other_nodes_cseq_keeps_growing(nodes, presentity):
    a, b, c = nodes
    refresh_and_end_through_other_nodes(a, (b, c, a, c, b), c, presentity)


def test_each_subscription_expiry_is_notified_exactly_once(nodes, presentity):
    """Three nodes' timers sweep through three Galera nodes: claims are
    local to a Galera node, so two may claim one expiry; one of them fails
    certification and finds it gone."""
    each_expiry_notified_once(nodes, presentity, count=24)


def test_each_publication_expiry_is_notified_exactly_once(nodes, presentity, gdb):
    """A publication that expires is taken out once: each watcher (one
    through each node) gets exactly one NOTIFY of the closed document."""
    dev = at(nodes[1], user="dev")
    watchers = [at(k) for k in nodes]
    try:
        dialogs = []
        for w in watchers:
            _, d = w.subscribe(presentity)
            w.wait_notify(d.call_id)
            dialogs.append(d)
        for d in dialogs:
            wait_answered(gdb, d.call_id)
        assert publish(dev, presentity, pidf_body(presentity, "t", "open"), expires=2).status == 200
        for w, d in zip(watchers, dialogs):
            w.wait_notify(d.call_id, 2)
        time.sleep(5)
        for w, d in zip(watchers, dialogs):
            seen = {n.cseq[0]: n for n in w.notifies(d.call_id)}
            assert sorted(seen) == [1, 2, 3]
            assert tuples(seen[3].body) == [("pa-closed", "closed")]
        assert gdb.query_on(2, "SELECT COUNT(*) FROM pa_publication WHERE presentity = %s",
                            (presentity[4:],)) == [(0,)]
    finally:
        dev.close()
        for w in watchers:
            w.close()


def test_notify_cseq_strictly_increases_with_publishes_through_every_node(nodes, presentity,
                                                                         gdb):
    """PUBLISHes reach the three nodes in turn, without waiting: every
    NOTIFY the watcher gets has a CSeq above the one before (never twice
    the same), and the last one carries the last state."""
    a = nodes[0]
    watcher = at(a)
    devs = [at(k, user="dev") for k in nodes]
    try:
        _, d = watcher.subscribe(presentity)
        watcher.wait_notify(d.call_id)
        etag = None
        for i in range(12):
            r = publish(devs[i % 3], presentity, pidf_body(presentity, "t", "open", note=f"n{i}"),
                        etag=etag)
            assert r.status == 200, (i, r.status)
            etag = r.get("sip-etag")
        last = watcher.wait_notify_until(d.call_id, lambda n: b"n11" in n.body, timeout=10)
        assert last is not None
        time.sleep(1)
        cseqs = [n.cseq[0] for n in watcher.notifies(d.call_id)]
        distinct = sorted(set(cseqs))
        assert distinct == list(range(1, len(distinct) + 1))
        # A retransmission repeats a CSeq with the same body; never two bodies.
        bodies = {}
        for n in watcher.notifies(d.call_id):
            assert bodies.setdefault(n.cseq[0], n.body) == n.body
        for node in range(3):
            assert gdb.query_on(node, "SELECT local_cseq FROM pa_subscription WHERE call_id = %s",
                                (d.call_id,)) == [(distinct[-1],)]
    finally:
        watcher.close()
        for dev in devs:
            dev.close()


def test_an_entity_tag_given_by_one_node_is_good_at_the_next_at_once(nodes, presentity):
    """A device's refresh reaches another node right after the answer
    with its new entity-tag: with causal reads that node sees the tag."""
    devs = [at(k, user="dev") for k in nodes]
    try:
        r = publish(devs[0], presentity, pidf_body(presentity, "t", "open", note="0"))
        etag = r.get("sip-etag")
        codes = []
        for i in range(1, 31):
            r = publish(devs[i % 3], presentity,
                        pidf_body(presentity, "t", "open", note=str(i)), etag=etag)
            codes.append(r.status)
            etag = r.get("sip-etag") or etag
        assert codes == [200] * 30
    finally:
        for dev in devs:
            dev.close()


def test_winfo_versions_grow_whatever_node_sends(nodes, presentity, gdb):
    owner = presentity[4:].split("@")[0]
    me = at(nodes[0], user=owner)
    others = [at(nodes[1 + i % 2], user=f"w{i}{rand(4)}") for i in range(4)]
    try:
        r, w = me.subscribe(presentity, event="presence.winfo",
                            headers=[("Accept", "application/watcherinfo+xml")])
        assert r.status == 200
        me.wait_notify(w.call_id)
        for n, other in enumerate(others):
            wait_answered(gdb, w.call_id)
            other.subscribe(presentity)
            me.wait_notify(w.call_id, n + 2)
        versions = [winfo_version(n.body) for n in me.notifies(w.call_id)]
        assert versions == sorted(set(versions)) and versions[0] == 0 and versions[-1] == 4
        senders = {n.get("via").split(";")[0].rsplit(":", 1)[1] for n in me.notifies(w.call_id)}
        assert len(senders) >= 2
    finally:
        me.close()
        for other in others:
            other.close()


def winfo_version(body: bytes) -> int:
    from lxml import etree
    return int(etree.fromstring(body).get("version"))


# -- authorization and tasks ------------------------------------------------

@pytest.fixture(scope="module")
def auth_nodes(gdb):
    """Two nodes that want digest credentials and the presentity's
    decision (auth implicit)."""
    started = [start_node(gdb, i, auth="implicit") for i in (1, 2)]
    yield started
    for k in started:
        k.cleanup()


def user(node, gdb, name):
    gdb.add_subscriber(name, "127.0.0.1", "secret")
    ua = at(node, user=name)
    ua.credentials = (name, "secret")
    return ua


def admin(config, *args):
    result = subprocess.run([sys.executable, "-m", "pa_handlers.admin", "--config", config,
                             *args], capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert result.returncode == 0, result.stderr
    return result


def test_approvals_and_removals_through_pa_admin_on_a_third_node_are_sent_once(
        auth_nodes, gdb, presentity, tmp_path):
    """pa-admin, on Galera node 1, leaves a task that one of the Kamailio
    nodes (on Galera nodes 2 and 3) carries out, once."""
    config = tmp_path / "pa.yaml"
    import yaml
    config.write_text(yaml.safe_dump(node_settings(gdb, 0, auth="implicit")))
    watchers = [user(k, gdb, "w" + rand(6)) for k in auth_nodes]
    try:
        dialogs = []
        for w in watchers:
            r, d = w.subscribe(presentity)
            assert r.status == 200
            assert w.wait_notify(d.call_id).subscription_state()[0] == "pending"
            dialogs.append(d)
        for w in watchers:
            admin(str(config), "approve", presentity, w.aor)
        for w, d in zip(watchers, dialogs):
            assert w.wait_notify(d.call_id, 2).subscription_state()[0] == "active"
        admin(str(config), "remove", presentity, watchers[0].aor)
        final = watchers[0].wait_notify(dialogs[0].call_id, 3)
        assert final.subscription_state() == ("terminated", {"reason": "deactivated"})
        time.sleep(2)
        assert [len({n.cseq for n in w.notifies(d.call_id)})
                for w, d in zip(watchers, dialogs)] == [3, 2]
        assert gdb.query_on(1, "SELECT COUNT(*) FROM pa_task") == [(0,)]
    finally:
        for w in watchers:
            w.close()


# -- the XMPP gateway's tasks ----------------------------------------------------

@pytest.fixture(scope="module")
def xmpp(gdb, tmp_path_factory):
    """Prosody, two Kamailio nodes (Galera nodes 1 and 2) serving the
    jabber domain, and the gateway on Galera node 3."""
    pytest.importorskip("slixmpp", reason="pip install slixmpp")
    from prosody import Prosody
    from test_jabber import COMPONENT, XMPP_DOMAIN, GatewayProcess
    from xmppclient import Loop
    server = Prosody(domain=XMPP_DOMAIN, component=COMPONENT).start()
    server.register("juliet", "pw-juliet")
    xmpp_settings = dict(xmpp_domains=[XMPP_DOMAIN], xmpp_component=COMPONENT,
                         xmpp_component_server=f"127.0.0.1:{server.component_port}",
                         xmpp_component_secret=server.component_secret,
                         xmpp_sip_domain="127.0.0.1")
    started = [start_node(gdb, i, **xmpp_settings) for i in (0, 1)]
    config = tmp_path_factory.mktemp("gateway") / "pa.yaml"
    import yaml
    config.write_text(yaml.safe_dump(node_settings(gdb, 2, **xmpp_settings)))
    gateway = GatewayProcess(str(config), str(config.parent / "gateway.log")).start()
    loop = Loop()
    yield started, server, loop
    loop.close()
    gateway.stop()
    for k in started:
        k.cleanup()
    server.cleanup()


def test_xmpp_presence_reaches_watchers_of_both_nodes_once(xmpp, gdb):
    """The gateway (on Galera node 3) turns an XMPP user's presence into a
    publication and leaves the fan-out as a task: one of the nodes does it,
    once, and each watcher, through either node, sees each change once."""
    from test_jabber import XMPP_DOMAIN, basic
    from xmppclient import XmppUser
    nodes, server, loop = xmpp
    presentity = f"sip:juliet@{XMPP_DOMAIN}"
    watchers = [at(k, user=f"w{i}{rand(4)}") for i, k in enumerate(nodes)]
    juliet = None
    try:
        dialogs = []
        for w in watchers:
            r, d = w.subscribe(presentity)
            assert r.status == 200
            dialogs.append(d)
        juliet = XmppUser(loop, f"juliet@{XMPP_DOMAIN}", "pw-juliet", server.c2s_port,
                          True).login()
        for w, d in zip(watchers, dialogs):
            w.wait_notify_until(d.call_id, lambda n: n.body and "open" in basic(n.body),
                                timeout=10)
        juliet.send(pshow="away", pstatus="on the balcony")
        for w, d in zip(watchers, dialogs):
            w.wait_notify_until(d.call_id, lambda n: b"on the balcony" in n.body, timeout=10)
        time.sleep(1.5)
        for w, d in zip(watchers, dialogs):
            bodies = {}
            for n in w.notifies(d.call_id):
                assert bodies.setdefault(n.cseq[0], n.body) == n.body, "a CSeq sent twice"
            assert sorted(bodies) == list(range(1, len(bodies) + 1))
            # Each state once: no change fanned out twice.
            states = [bodies[c] for c in sorted(bodies)]
            assert len(states) == len({b for b in states})
        assert gdb.query_on(0, "SELECT COUNT(*) FROM pa_task") == [(0,)]
    finally:
        if juliet is not None:
            juliet.close()
        for w in watchers:
            w.close()


# -- conflicts ------------------------------------------------------------------

def test_concurrent_publishes_of_one_presentity_through_three_nodes(nodes, presentity, gdb):
    """Six devices of one presentity publish at once, ten times each,
    through the three nodes (so through three Galera nodes): every answer
    is 200, the document ends with every device's last state, the
    watcher's NOTIFY CSeqs never repeat, and the conflicts were retried."""
    before = retries(nodes)
    watcher = at(nodes[0])
    _, d = watcher.subscribe(presentity)
    watcher.wait_notify(d.call_id)
    codes = {}

    def device(n):
        ua = at(nodes[n % 3], user=f"dev{n}")
        etag = None
        try:
            for i in range(10):
                r = publish(ua, presentity,
                            pidf_body(presentity, f"dev{n}", "open", note=f"dev{n}-{i}"),
                            etag=etag, timeout=10)
                codes[(n, i)] = r.status
                if r.status == 200:
                    etag = r.get("sip-etag")
                else:
                    assert r.status != 500 or r.get("retry-after")
        finally:
            ua.close()
    try:
        together(device, 6, timeout=60)
        assert sorted(set(codes.values())) == [200] and len(codes) == 60
        expected = sorted((f"dev{n}", "open") for n in range(6))
        for node in range(3):
            [(body,)] = gdb.query_on(node, "SELECT body FROM pa_document WHERE presentity = %s",
                                     (presentity[4:],))
            assert sorted(tuples(body)) == expected
            assert all(f"dev{n}-9".encode() in body for n in range(6))
        last = watcher.wait_notify_until(
            d.call_id, lambda m: all(f"dev{n}-9".encode() in m.body for n in range(6)),
            timeout=10)
        assert last is not None
        bodies = {}
        for m in watcher.notifies(d.call_id):
            assert bodies.setdefault(m.cseq[0], m.body) == m.body, "a CSeq sent twice"
        assert sorted(bodies) == list(range(1, len(bodies) + 1))
        retried = retries(nodes) - before
        print(f"\n60 PUBLISHes of one presentity through three nodes: {retried} retries")
        assert retried > 0, "no conflict retried: the test proves nothing"
    finally:
        watcher.close()


# -- a Galera node dies under traffic (last: it restarts the node) ------------

@pytest.fixture
def restarted(galera_cluster):
    """Every Galera node runs again after the test, whatever happened."""
    yield
    for i, node in enumerate(galera_cluster.nodes):
        if not node.running():
            galera_cluster.restart(i)


def db_cluster_cfg(directory, urls: list[str]) -> str:
    """kamailio.cfg.sample with the README's db_cluster recipe: usrloc and
    auth_db on the Galera nodes of `urls`, tried in order."""
    with open(os.path.join(ROOT, "kamailio.cfg.sample")) as f:
        text = f.read()
    recipe = ['loadmodule "db_cluster.so"']
    recipe += [f'modparam("db_cluster", "connection", "c{i + 1}=>{url}")'
               for i, url in enumerate(urls)]
    recipe.append('modparam("db_cluster", "cluster", "pa=>' + ";".join(
        f"c{i + 1}={9 - i}s{9 - i}s" for i in range(len(urls))) + '")')
    anchor = 'loadmodule "app_python3.so"\n'
    assert anchor in text
    text = text.replace(anchor, anchor + "\n".join(recipe) + "\n")
    for module in ("usrloc", "auth_db"):
        line = f'modparam("{module}", "db_url", PA_DB_URL)'
        assert line in text
        text = text.replace(line, f'modparam("{module}", "db_url", "cluster://pa")')
    path = os.path.join(directory, "kamailio.cfg")
    with open(path, "w") as f:
        f.write(text)
    # Its import_file is relative to the configuration.
    os.symlink(os.path.join(ROOT, "kemi"), os.path.join(directory, "kemi"))
    return path


def test_the_registrar_on_db_cluster_carries_on_when_a_galera_node_dies(
        gdb, galera_cluster, restarted, presentity, tmp_path):
    """usrloc and auth_db have no db_url with several hosts: the README's
    recipe puts them on db_cluster, which tries the next Galera node when
    the first fails; the plugin's own db_url names all three."""
    cfg = db_cluster_cfg(str(tmp_path), [gdb.url_from(i, failover=False) for i in range(3)])
    k = Kamailio(node_settings(gdb, 0), cfg=cfg).start()
    user_name = presentity[4:].split("@")[0]
    watcher, phone = at(k), at(k, user=user_name)
    try:
        _, d = watcher.subscribe(presentity)
        watcher.wait_notify(d.call_id)
        assert phone.register(presentity, expires=600).status == 200
        watcher.wait_notify_until(d.call_id, lambda n: b"<basic>open</basic>" in n.body)
        galera_cluster.kill(0)
        galera_cluster.wait_size(2)
        time.sleep(1.2)    # the plugin's pause after a failure
        other = at(k, user=user_name)
        try:
            assert other.register(presentity, expires=600).status == 200
        finally:
            other.close()
        bindings = gdb.query_on(1, "SELECT COUNT(*) FROM location WHERE username = %s",
                                (user_name,))
        assert bindings == [(2,)]
        assert phone.register(presentity, expires=0).status == 200
        watcher.wait_notify_until(d.call_id, lambda n: b"<basic>open</basic>" in n.body,
                                  after=1)
    finally:
        watcher.close()
        phone.close()
        log = k.log()
        k.cleanup()
    assert "Traceback" not in log


@pytest.fixture
def node_a(gdb):
    """A Kamailio node on Galera node 1 whose NOTIFYs wait long for their
    answers: none of its subscriptions ends during the test because an
    answer could not be recorded while the database was away.  Its three
    test clients subscribe as fast as it answers, hundreds of times each:
    the per-watcher limit is not what this test is about."""
    k = start_node(gdb, 0, notify_timeout=60, max_subscriptions_per_watcher=100000)
    yield k
    k.cleanup()


def test_a_galera_node_killed_under_traffic(gdb, galera_cluster, node_a, nodes, restarted):
    """Kamailio node A is attached to Galera node 1 (its db_url names
    nodes 1, 2, 3 in that order).  Node 1 is SIGKILLed while PUBLISHes and
    SUBSCRIBEs flow through A: A carries on through node 2 without a
    restart, every request meanwhile gets 2xx or 500 with Retry-After,
    and every one that got a 2xx is on both surviving nodes; restarted,
    node 1 rejoins (IST) with the same tables."""
    a = node_a
    acknowledged = {"publish": [], "subscribe": []}
    answers = []
    stop = threading.Event()

    uas = [at(a, user=f"t{n}") for n in range(3)]

    def traffic(n):
        ua = uas[n]
        i = 0
        if True:
            while not stop.is_set():
                i += 1
                presentity = f"sip:kill{n}x{i}{rand(4)}@127.0.0.1"
                started = time.monotonic()
                r = publish(ua, presentity, pidf_body(presentity, "t", "open"), timeout=10)
                answers.append((started, time.monotonic() - started, r.status,
                                r.get("retry-after")))
                if r.status == 200:
                    acknowledged["publish"].append((r.get("sip-etag"), started))
                else:
                    time.sleep(0.05)
                started = time.monotonic()
                r, d = ua.subscribe(presentity, timeout=10)
                answers.append((started, time.monotonic() - started, r.status,
                                r.get("retry-after")))
                if r.status == 200:
                    acknowledged["subscribe"].append((d.call_id, started))
                else:
                    # A client told to retry later does not come back at
                    # once (a loop that did would fill Kamailio's memory
                    # with transactions); the test's clients wait 50 ms.
                    time.sleep(0.05)
    threads = [threading.Thread(target=traffic, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.5)
        killed_at = time.monotonic()
        galera_cluster.kill(0)
        # The others stall their commits until they agree node 1 is gone
        # (evs.suspect_timeout, 2 s here); then A's next attempt after a
        # failure (a pause of 1 s) goes through node 2.
        galera_cluster.wait_size(2)
        reformed_at = time.monotonic()
        time.sleep(4)
    finally:
        stop.set()
        for t in threads:
            t.join(30)

    bad = [(s, ra) for _, _, s, ra in answers if s != 200 and not (s == 500 and ra)]
    assert not bad, (bad, a.dir)
    after = [s for started, _, s, _ in answers if started > reformed_at + 1.5]
    assert after and set(after) == {200}, "node A did not carry on through another node"
    refused = [started for started, _, s, _ in answers if s == 500]
    slowest = max(elapsed for _, elapsed, _, _ in answers)
    print(f"\n{len(answers)} requests, {len(refused)} refused with 500 and Retry-After"
          f" from {min(refused, default=killed_at) - killed_at:.1f} s to"
          f" {max(refused, default=killed_at) - killed_at:.1f} s after the kill;"
          f" cluster of two after {reformed_at - killed_at:.1f} s;"
          f" slowest answer {slowest * 1000:.0f} ms")

    def check(node):
        etags = {e for (e,) in gdb.query_on(node, "SELECT etag FROM pa_publication")}
        call_ids = {c for (c,) in gdb.query_on(node, "SELECT call_id FROM pa_subscription")}
        lost = [(what, key, round(at - killed_at, 3)) for what, found in
                (("publish", etags), ("subscribe", call_ids))
                for key, at in acknowledged[what] if key not in found]
        assert not lost, (node, lost, a.dir)
    for node in (1, 2):
        check(node)

    started = time.monotonic()
    galera_cluster.restart(0)
    rejoined = time.monotonic() - started
    log = galera_cluster.log(galera_cluster.nodes[0])
    print(f"node 1 rejoined in {rejoined:.1f} s by"
          f" {'IST' if 'IST received' in log.split('WSREP: Shutdown')[-1] else 'SST'}")
    check(0)
    # Kamailio quiet (no sweep, no NOTIFY answer changing rows meanwhile),
    # every node holds the same tables.
    for ua in uas:
        ua.close()
    for k in nodes + [a]:
        k.proc.send_signal(19)     # SIGSTOP
    try:
        time.sleep(0.5)
        sums = [gdb.query_on(i, "CHECKSUM TABLE pa_publication, pa_subscription, pa_document,"
                                " pa_watcher") for i in range(3)]
        assert sums[0] == sums[1] == sums[2]
    finally:
        for k in nodes + [a]:
            k.proc.send_signal(18)  # SIGCONT
