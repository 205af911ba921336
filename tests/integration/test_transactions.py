"""The store's transactions on a real MariaDB: a transaction is all of its
changes or none, whatever fails in the middle of a batch, and nothing a
batch sends after a failed statement can commit by itself (the Galera
half-commit: a transaction aborted from outside while its batch ran, the
rest of the batch committing statement by statement)."""

import pytest

from pa_handlers.config import parse_db_url
from pa_handlers.store import Database
from pa_handlers.store.db import DRIVER


@pytest.fixture(scope="module")
def table(database):
    database.query("CREATE TABLE tx (id INT PRIMARY KEY, v INT NOT NULL)")
    return database


@pytest.fixture
def db(table):
    table.query("DELETE FROM tx")
    d = Database(parse_db_url(table.url()), timeout=3.0)
    yield d
    d.discard()


def rows(table):
    return table.query("SELECT id, v FROM tx ORDER BY id")


def test_a_failure_in_the_middle_of_a_batch_leaves_nothing(table, db):
    table.query("INSERT INTO tx VALUES (2, 0)")
    with pytest.raises(DRIVER.Error):
        db.transaction(lambda tx: tx.batch(("INSERT INTO tx VALUES (1, 1)", ()),
                                           ("INSERT INTO tx VALUES (2, 2)", ()),   # duplicate
                                           ("INSERT INTO tx VALUES (3, 3)", ())))
    assert rows(table) == [(2, 0)]
    # The connection is usable, in autocommit mode again.
    db.run(lambda s: s.execute("INSERT INTO tx VALUES (4, 4)"))
    assert rows(table) == [(2, 0), (4, 4)]


def test_what_follows_a_failed_statement_commits_nothing_by_itself(table, db):
    """Even were the server to go on with the batch after a failure (as a
    Galera node did after a certification abort), what follows runs with
    autocommit off, and only the transaction's explicit COMMIT, sent after
    every result came back good, commits."""
    def work(tx):
        tx.batch(("INSERT INTO tx VALUES (1, 1)", ()), ("INSERT INTO tx VALUES (5, 5)", ()))
        # The session's state after the batch: a transaction open, nothing
        # committed, as another connection sees it.
        assert table.query("SELECT COUNT(*) FROM tx") == [(0,)]
        assert tx.open and tx.writes == 2
        raise RuntimeError("the work fails after its batch")
    with pytest.raises(RuntimeError):
        db.transaction(work)
    assert rows(table) == []


def test_a_transaction_commits_all_of_it(table, db):
    db.transaction(lambda tx: (tx.batch(("INSERT INTO tx VALUES (1, 1)", ()),
                                        ("INSERT INTO tx VALUES (2, 2)", ())),
                               tx.batch(("UPDATE tx SET v = 3 WHERE id = 2", ()))))
    assert rows(table) == [(1, 1), (2, 3)]


def test_a_deadlocked_transaction_runs_again_from_the_start(table, db):
    table.query("INSERT INTO tx VALUES (1, 0)")
    attempts = []

    def work(tx):
        attempts.append(1)
        tx.batch(("UPDATE tx SET v = v + 1 WHERE id = 1", ()))
        if len(attempts) == 1:
            # What a deadlock or a certification failure looks like to the
            # client: error 1213 in the middle of the transaction.
            raise DRIVER.OperationalError(1213, "Deadlock found")
    db.transaction(work)
    assert len(attempts) == 2 and rows(table) == [(1, 1)]


def test_a_url_with_several_hosts_connects_to_the_first_that_answers(table):
    """A Galera node that is down (nothing listens) is passed over, and a
    process stays with the server it reached."""
    from harness import free_port
    dead = free_port()
    url = table.url().replace(f"@{table.host}:{table.port}/",
                              f"@127.0.0.1:{dead},{table.host}:{table.port}/")
    db = Database(parse_db_url(url), timeout=3.0)
    try:
        assert db.run(lambda s: (s.execute("SELECT @@port"), s.fetchone())[1]) == (table.port,)
        db.discard()
        assert db.run(lambda s: (s.execute("SELECT 1"), s.fetchone())[1]) == (1,)
    finally:
        db.discard()


def test_causal_reads_are_set_on_each_connection(table):
    """db_sync_wait sets wsrep_sync_wait, which a MariaDB without Galera
    accepts too (and ignores)."""
    db = Database(parse_db_url(table.url()), timeout=3.0, sync_wait=7)
    try:
        assert db.run(lambda s: (s.execute("SELECT @@SESSION.wsrep_sync_wait"),
                                 s.fetchone())[1]) == (7,)
    finally:
        db.discard()


def test_a_deadlock_victim_is_run_again_and_commits_once(table, db):
    """A real deadlock on one MariaDB: the store's transaction is the
    victim (it changed fewer rows), is rolled back whole, paused and run
    again, and commits once.  (Sent as one batch with its COMMIT, as the
    old store did, the victim's batch stops at the aborted statement on a
    single server, so what follows it never runs: the half-commit needs
    Galera, which aborts a transaction from outside.)"""
    import threading
    import time
    table.query("INSERT INTO tx VALUES " + ",".join(f"({i}, 0)" for i in range(1, 101)))
    other = table.connect()
    cur = other.cursor()
    cur.execute("START TRANSACTION")
    cur.execute("UPDATE tx SET v = v + 10 WHERE id >= 2")
    attempts = []

    def work(tx):
        attempts.append(1)
        tx.batch(("UPDATE tx SET v = v + 1 WHERE id = 1", ()),
                 ("UPDATE tx SET v = v + 1 WHERE id = 2", ()), commit=True)
    victim = threading.Thread(target=db.transaction, args=(work,))
    victim.start()
    time.sleep(0.3)             # it holds row 1 and waits for row 2
    cur.execute("UPDATE tx SET v = v + 10 WHERE id = 1")    # the cycle
    cur.execute("COMMIT")
    victim.join(10)
    other.close()
    assert db.retries == 1 and len(attempts) == 2
    assert table.query("SELECT v FROM tx WHERE id <= 2 ORDER BY id") == [(11,), (11,)]
