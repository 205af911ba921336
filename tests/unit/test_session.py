"""The batch protocol of a transaction (pa_handlers.store.session): the
COMMIT never travels in one round trip with more than one write, so that
nothing a batch sends after a failure can be committed with it."""

from pa_handlers.store.session import Session


class RecordingCursor:
    """Records what would be sent; every statement 'succeeds'."""

    def __init__(self):
        self.sent: list[str] = []
        self.rowcount, self.lastrowid, self.description = 1, 0, None

    def execute(self, sql, args=()):
        self.sent.append(sql)

    def nextset(self):
        return None

    def fetchall(self):
        return []


def session(transaction=True):
    cur = RecordingCursor()
    return Session(cur, transaction), cur.sent


def test_one_write_commits_in_its_batch():
    s, sent = session()
    s.batch(("UPDATE a SET x = 1", ()), ("SELECT 1", ()), commit=True)
    assert sent == ["SET autocommit = 0;\nUPDATE a SET x = 1;\nSELECT 1;\nCOMMIT;\n"
                    "SET autocommit = 1"]
    assert not s.open


def test_several_writes_commit_in_a_round_trip_of_their_own():
    s, sent = session()
    s.batch(("INSERT INTO a VALUES (1)", ()), ("DELETE FROM b", ()), commit=True)
    assert sent == ["SET autocommit = 0;\nINSERT INTO a VALUES (1);\nDELETE FROM b"]
    assert s.open and s.writes == 2
    s.commit()
    assert sent[-1] == "COMMIT;\nSET autocommit = 1" and not s.open


def test_writes_of_earlier_batches_count():
    s, sent = session()
    s.batch(("INSERT INTO a VALUES (1)", ()))
    s.batch(("SELECT 1", ()), ("UPDATE a SET x = 2", ()), commit=True)
    assert "COMMIT" not in sent[-1] and s.open


def test_a_last_batch_that_writes_once_first_carries_the_commit():
    """What a publication's change ends with: the new document stored,
    after the change and the reads composing it came back good."""
    s, sent = session()
    s.batch(("INSERT INTO a VALUES (1)", ()), ("DELETE FROM b", ()), ("SELECT 1", ()))
    s.batch(("UPDATE doc SET body = 'x'", ()), ("SELECT 2", ()), commit=True)
    assert sent[-1] == "UPDATE doc SET body = 'x';\nSELECT 2;\nCOMMIT;\nSET autocommit = 1"
    assert not s.open


def test_reads_only_commit_in_their_batch():
    s, sent = session()
    s.batch(("SELECT 1 FOR UPDATE", ()), commit=True)
    assert sent[-1].endswith("COMMIT;\nSET autocommit = 1")


def test_autocommit_work_sends_no_transaction_control():
    s, sent = session(transaction=False)
    s.batch(("INSERT INTO a VALUES (1)", ()), ("SELECT 1", ()), commit=True)
    assert sent == ["INSERT INTO a VALUES (1);\nSELECT 1"] and s.changed
