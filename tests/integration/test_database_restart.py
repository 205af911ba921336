"""The database restarts under a running presence agent: no request is
failed for it.  A connection the server closed while idle is replaced
before it carries a request; one that breaks under a request is replaced
and the request run again, once, only when what it sent cannot have
changed the database.  A MariaDB server of the module's own, restarted
for real."""

import threading
import time

import pytest

from conftest import settings
from harness import Kamailio, PrivateMariaDB, ScratchDatabase
from helpers import pidf_body
from pa_handlers.config import parse_db_url
from pa_handlers.store import Database, StoreUnavailable
from sipua import SipUA, rand


@pytest.fixture(scope="module")
def server():
    s = PrivateMariaDB().start()
    yield s
    s.cleanup()


@pytest.fixture(scope="module")
def private(server):
    db = ScratchDatabase(server=server)
    db.query("CREATE TABLE t (id INT AUTO_INCREMENT PRIMARY KEY, v INT)")
    return db


def test_requests_right_after_a_database_restart_are_served(server, private):
    node = Kamailio(settings(private, db_timeout=2)).start()
    device = SipUA(node.address, user="dev")
    try:
        # Several requests at once, so that every worker holds a connection
        # it used a moment ago (an idle one would be pinged first).
        def subscribe():
            ua = SipUA(node.address, user="w" + rand(6))
            try:
                assert ua.subscribe(f"sip:p{rand(6)}@127.0.0.1")[0].status == 200
            finally:
                ua.close()
        for _ in range(3):
            threads = [threading.Thread(target=subscribe) for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(10)
        server.restart()
        answers = []
        presentity = f"sip:p{rand(6)}@127.0.0.1"
        watcher = SipUA(node.address)
        try:
            for n in range(6):
                answers.append(watcher.subscribe(presentity)[0].status)
                answers.append(device.request(
                    "PUBLISH", presentity, [("Event", "presence"),
                                            ("Content-Type", "application/pidf+xml")],
                    pidf_body(presentity, f"t{n}", "open")).status)
        finally:
            watcher.close()
        assert answers == [200] * 12
    finally:
        device.close()
        node.cleanup()


# -- the rule, on the store's Database ---------------------------------------

@pytest.fixture
def db(private):
    database = Database(parse_db_url(private.url()), timeout=3.0)
    yield database
    database.discard()


def kill_soon(server, connection_id, after=0.3):
    """KILL the connection while it runs a query, as a server going down
    does to it."""
    def kill():
        time.sleep(after)
        with server.admin() as conn, conn.cursor() as cur:
            cur.execute(f"KILL CONNECTION {int(connection_id)}")
    threading.Thread(target=kill, daemon=True).start()


def killed_once(server, runs: list):
    """Work that records its connection and, the first time, has it
    killed during the work's last statement."""
    def first_statement(cur):
        cur.execute("SELECT CONNECTION_ID()")
        runs.append(cur.fetchone()[0])
        if len(runs) == 1:
            kill_soon(server, runs[0])
    return first_statement


def rows(private):
    return private.query("SELECT COUNT(*) FROM t")[0][0]


def test_a_connection_closed_while_idle_is_replaced_before_a_write(server, private, db):
    private.query("DELETE FROM t")
    [(connection_id,)] = db.run(lambda cur: (cur.execute("SELECT CONNECTION_ID()"),
                                             cur.fetchall())[1])
    with server.admin() as conn, conn.cursor() as cur:
        cur.execute(f"KILL CONNECTION {int(connection_id)}")
    time.sleep(0.2)
    # A write: had it gone out on the dead connection, it could not have
    # been run again.
    db.run(lambda cur: cur.execute("INSERT INTO t (v) VALUES (1)"))
    assert rows(private) == 1


def test_a_read_whose_connection_breaks_runs_again_on_a_fresh_one(server, db):
    runs = []

    def work(cur):
        killed_once(server, runs)(cur)
        cur.execute("SELECT SLEEP(1)")
        return cur.fetchone()[0]
    assert db.run(work) == 0
    assert len(runs) == 2 and runs[0] != runs[1]


def test_a_write_whose_connection_breaks_is_not_run_again(server, private, db):
    private.query("DELETE FROM t")
    runs = []

    def work(cur):
        killed_once(server, runs)(cur)
        cur.batch(("INSERT INTO t (v) VALUES (1)", ()), ("SELECT SLEEP(1)", ()))
    with pytest.raises(StoreUnavailable):
        db.run(work)
    assert len(runs) == 1 and rows(private) == 1
    # The next request is not refused for it: the server is there.
    db.run(lambda cur: cur.execute("SELECT 1"))


def test_a_transaction_whose_commit_was_sent_is_not_run_again(server, private, db):
    private.query("DELETE FROM t")
    runs = []

    def work(tx):
        killed_once(server, runs)(tx)
        tx.batch(("INSERT INTO t (v) VALUES (1)", ()), commit=True)
        tx.execute("SELECT SLEEP(1)")
    with pytest.raises(StoreUnavailable):
        db.transaction(work)
    assert len(runs) == 1 and rows(private) == 1


def test_a_transaction_broken_before_its_commit_runs_again(server, private, db):
    private.query("DELETE FROM t")
    runs = []

    def work(tx):
        killed_once(server, runs)(tx)
        tx.batch(("INSERT INTO t (v) VALUES (1)", ()), ("SELECT SLEEP(1)", ()))
    db.transaction(work)
    # The first attempt was rolled back with its connection.
    assert len(runs) == 2 and rows(private) == 1
