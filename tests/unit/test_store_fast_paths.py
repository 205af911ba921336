"""The store's shortcuts must say exactly what the long way says: SQL
literals made without mysqlclient's per-value dispatch, and what a new
publication displaces decided from the rows read to compose."""

from pa_handlers.store.documents import _displaced
from pa_handlers.store.session import Session, _fast_literal


class Connection:
    """What _fast_literal uses of a mysqlclient connection: its C escaping
    (string_literal) and its generic literal(), here MySQL's rules."""
    encoding = "utf8"

    def string_literal(self, raw: bytes) -> bytes:
        return b"'" + raw.replace(b"\\", b"\\\\").replace(b"'", b"\\'") + b"'"

    def literal(self, value):
        if value is None:
            return b"NULL"
        if isinstance(value, bytes):
            return self.string_literal(value)
        if isinstance(value, bool):
            return b"1" if value else b"0"
        return str(value).encode()

    def _tuple_literal(self, t):
        return b"(" + b",".join(map(self.literal, t)) + b")"


class Cursor:
    description = None
    rowcount = lastrowid = 0

    def __init__(self, connection):
        self.connection, self.sent = connection, []

    def execute(self, sql, args=None):
        self.sent.append((sql, args))

    def nextset(self):
        return None


def test_literals_of_common_types_are_escaped_by_the_connection():
    literal, encoding = _fast_literal(Cursor(Connection()))
    assert encoding == "utf8"
    assert literal("it's \\ é") == "'it\\'s \\\\ é'".encode()
    assert literal(42) == b"42"
    assert literal(True) == b"1"          # a bool is no int here: the generic way
    assert literal(None) == b"NULL"
    assert literal(b"x'") == b"'x\\''"


def test_a_session_sends_the_statement_with_its_values_in_place():
    cur = Cursor(Connection())
    Session(cur, transaction=False).execute(
        "SELECT 1 FROM t WHERE a = %s AND b = %s AND c LIKE 'x%%'", ("o'k", 7))
    assert cur.sent == [(b"SELECT 1 FROM t WHERE a = 'o\\'k' AND b = 7 AND c LIKE 'x%'", None)]


def test_another_driver_formats_the_values_itself():
    class Other:
        pass
    cur = Cursor(Other())
    Session(cur, transaction=False).execute("SELECT %s", ("a",))
    assert cur.sent == [("SELECT %s", ["a"])]


def row(pub_id, origin="publish", source="", updated_at=0):
    return (pub_id, origin, source, b"", 2_000_000_000, updated_at)


def test_the_same_source_supersedes_its_earlier_publications():
    rows = [row(1, source="udp:a"), row(2, source="udp:b"), row(3, source="udp:a")]
    assert _displaced(rows, 3, "udp:a", 16) == ({1}, set())


def test_beyond_the_limit_the_least_recently_refreshed_go():
    rows = [row(1, updated_at=30), row(2, updated_at=10), row(3, updated_at=20),
            row(4, origin="registrar", updated_at=0), row(5, updated_at=40)]
    # Keep 3: the new one (5) and the two refreshed most recently (1, 3).
    assert _displaced(rows, 5, "", 3) == (set(), {2})
    # Equal refresh times: the older id goes first.
    rows = [row(1, updated_at=5), row(2, updated_at=5), row(3, updated_at=5)]
    assert _displaced(rows, 3, "", 2) == (set(), {1})


def test_without_a_source_nothing_is_superseded():
    assert _displaced([row(1), row(2)], 2, "", 16) == (set(), set())
