"""A unit of work's statements: one at a time, as a cursor, or several in
one round trip; in a transaction, with autocommit off until the commit
(see db.py for why)."""

from __future__ import annotations

import dataclasses

_BEGIN = ("SET autocommit = 0", ())
_COMMIT = (("COMMIT", ()), ("SET autocommit = 1", ()))
_ROLLBACK = "ROLLBACK;\nSET autocommit = 1"


@dataclasses.dataclass
class Result:
    rowcount: int
    lastrowid: int
    rows: list


Statement = tuple[str, "tuple | list"]


def _writes(sql: str) -> bool:
    return sql.lstrip()[:6].upper() != "SELECT"


def _commit_may_ride(transaction_writes: int, batch_writes: int, statements) -> bool:
    """Whether a COMMIT may travel at the end of this batch: only when no
    write of the transaction can come to be committed without the others.
    The earlier batches all came back good (else this one was not sent),
    and should a statement of this one be aborted (a deadlock, a Galera
    certification conflict aborting the transaction from outside) and the
    server go on with the batch, what follows runs in a new transaction
    that the COMMIT would commit.  So: the whole transaction writes at most
    once, or this batch writes once, with its first statement (nothing
    before it can be aborted, and it is followed by reads only)."""
    if transaction_writes <= 1:
        return True
    return batch_writes == 1 and _writes(statements[0][0])


def _fast_literal(cur):
    """For mysqlclient (MySQLdb): a function giving a value's SQL literal as
    the driver's Connection.literal does, the common types (str, int) by
    the connection's own C escaping without the driver's chain of type
    tests; and the connection's encoding.  (None, None) for another driver,
    whose execute() then does it."""
    conn = getattr(cur, "connection", None)
    string_literal = getattr(conn, "string_literal", None)
    if string_literal is None or not hasattr(conn, "_tuple_literal"):
        return None, None
    encoding = conn.encoding
    generic = conn.literal

    def literal(value):
        kind = type(value)
        if kind is str:
            return string_literal(value.encode(encoding))
        if kind is int:
            return b"%d" % value
        return generic(value)
    return literal, encoding


class Session:
    """What a unit of work runs its statements with: one statement at a
    time (`execute`, then `fetchone`/`fetchall`/`rowcount`, as a cursor)
    or several per round trip (`batch`).  In a transaction the first
    statement turns autocommit off; `Database.transaction` commits."""

    def __init__(self, cur, transaction: bool):
        self.cur = cur
        self.transaction = transaction
        self.open = False           # a transaction has begun and is not ended
        self.writes = 0             # statements of the open transaction that write
        self.changed = False        # something sent may have changed the database
        self._last = Result(0, 0, [])
        self._rows = iter(())
        self._literal, self._encoding = _fast_literal(cur)

    # -- cursor-like ------------------------------------------------------

    def execute(self, sql: str, args: tuple | list = ()) -> int:
        """One statement; its rows then come from fetchone()/fetchall()."""
        self._last = self.batch((sql, args))[0]
        self._rows = iter(self._last.rows)
        return self._last.rowcount

    def executemany(self, sql: str, rows: list) -> None:
        """One statement for many rows (an INSERT ... VALUES of them all)."""
        if not rows:
            return
        if self.transaction and not self.open:
            self._run([_BEGIN])
            self.open, self.writes = True, 0
        self.writes += 1
        self.changed = self.changed or not self.transaction
        self.cur.executemany(sql, rows)

    def fetchone(self):
        return next(self._rows, None)

    def fetchall(self) -> list:
        return list(self._rows)

    @property
    def rowcount(self) -> int:
        return self._last.rowcount

    @property
    def lastrowid(self) -> int:
        return self._last.lastrowid

    # -- several statements per round trip ----------------------------------

    def batch(self, *statements: Statement, commit: bool = False) -> list[Result]:
        """Run `statements` in one round trip; their results in order.  A
        round trip costs both processes a wake-up and a context switch, more
        than most of our statements cost the server.  `commit`: the
        transaction's last batch; the COMMIT rides along when that is safe."""
        head: list[Statement] = []
        tail: list[Statement] = []
        writes = sum(1 for sql, _ in statements if _writes(sql))
        if self.transaction:
            if not self.open:
                head = [_BEGIN]
                self.open, self.writes = True, 0
            self.writes += writes
            if commit and _commit_may_ride(self.writes, writes, statements):
                tail = list(_COMMIT)
        if writes and (not self.transaction or tail):
            self.changed = True     # autocommitted, or committed with it
        results = self._run(head + list(statements) + tail)
        if tail:
            self.open = False
        return results[len(head):len(results) - len(tail)]

    def commit(self) -> None:
        """End the open transaction, keeping what it did."""
        if self.open:
            self.changed = self.changed or self.writes > 0
            self._run(list(_COMMIT))
            self.open = False

    def rollback(self) -> None:
        """End the open transaction, undoing what it did."""
        if self.open:
            self.open = False
            self.cur.execute(_ROLLBACK)
            while self.cur.nextset():
                pass

    def _bound(self, sql: str, args: list) -> bytes:
        """The statement with its values in place, each escaped by the
        connection (_fast_literal): what mysqlclient's execute(sql, args)
        sends, for it binds values on the client side too."""
        return sql.encode(self._encoding) % tuple(map(self._literal, args))

    def _run(self, statements: list[Statement]) -> list[Result]:
        cur = self.cur
        sql = ";\n".join(sql for sql, _ in statements)
        args = [value for _, args in statements for value in args]
        if self._literal is None:
            cur.execute(sql, args)
        else:
            # What the driver's execute does, with its per-value dispatch
            # done once per type: a fan-out's statements carry hundreds of
            # values, and escaping them was most of its Python time.
            cur.execute(self._bound(sql, args))
        results = []
        for i in range(len(statements)):
            if i:
                cur.nextset()
            results.append(Result(cur.rowcount, cur.lastrowid,
                                  list(cur.fetchall()) if cur.description else []))
        return results
