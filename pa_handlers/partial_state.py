"""Documents whose NOTIFYs may carry partial state (RFC 4235 dialog, RFC
3680 reg): the composed document remembers, for each item (a dialog, a
contact), the document version in which it last changed, and for items
that left, the version in which they did (kept for the last MAX_GONE
departures).  A watcher that acknowledged version t (the subscription's
told_version, sql/005) is then sent what changed after t: the items
changed and the items gone.  It gets full state instead on the first
NOTIFY, after a SUBSCRIBE (told 0), when departures older than the ones
kept may concern it (t below the horizon), or when nothing changed since
t.  The document's version `v` is pa_document.version: both rise by one
per change of the document.

The stored form (JSON): {"v": version, "h": horizon, "items": [[id,
content, at], ...], "gone": [[id, content, at], ...]}.
"""

from __future__ import annotations

import json
from typing import Any, Callable

MAX_GONE = 64

# end(id, content) -> (the content of the item as gone, whether it had
# ended already: then it keeps the version in which it ended).
End = Callable[[str, Any], "tuple[Any, bool]"]


class State:
    def __init__(self, version: int = 0, horizon: int = 0,
                 items: list | None = None, gone: list | None = None):
        self.version, self.horizon = version, horizon
        self.items, self.gone = items or [], gone or []

    @classmethod
    def loads(cls, body: bytes | None) -> "State":
        if not body:
            return cls()
        data = json.loads(body)
        return cls(data["v"], data["h"], data["items"], data["gone"])

    def dumps(self) -> bytes:
        return json.dumps({"v": self.version, "h": self.horizon, "items": self.items,
                           "gone": self.gone}).encode()

    def delta(self, told: int) -> tuple[list, list] | None:
        """What changed since version `told` (items, gone), or None when a
        watcher that has `told` must get full state."""
        if told <= 0 or told < self.horizon or told >= self.version:
            return None
        items = [i for i in self.items if i[2] > told]
        gone = [g for g in self.gone if g[2] > told]
        return (items, gone) if items or gone else None


def shown(document: bytes | None, told: int, partial: bool) -> tuple[list, list | None]:
    """What a NOTIFY shows of a stored document: (every item's content,
    None) for full state, or (every item's content, the contents changed
    or gone since `told`) when `partial` is allowed and possible."""
    state = State.loads(document)
    everything = [i[1] for i in state.items]
    delta = state.delta(told) if partial else None
    return everything, None if delta is None else [i[1] for i in delta[0] + delta[1]]


def compose(items: list[tuple[str, Any]], previous: bytes | None, end: End) -> bytes:
    """The new stored document of `items` (id, content), given the previous
    one; the previous body itself when nothing changed."""
    old = State.loads(previous)
    before = {i[0]: i for i in old.items}
    ids = {item_id for item_id, _ in items}
    version = old.version + 1
    changed = False
    new_items = []
    for item_id, content in items:
        prior = before.get(item_id)
        if prior is not None and prior[1] == content:
            new_items.append(prior)
        else:
            new_items.append([item_id, content, version])
            changed = True
    gone = [g for g in old.gone if g[0] not in ids]
    changed = changed or len(gone) != len(old.gone) or \
        [i[0] for i in new_items] != [i[0] for i in old.items]
    for item_id, prior in before.items():
        if item_id not in ids:
            content, already = end(item_id, prior[1])
            gone.append([item_id, content, prior[2] if already else version])
            changed = True
    if not changed:
        return previous or b""
    horizon = old.horizon
    if len(gone) > MAX_GONE:
        gone.sort(key=lambda g: g[2])
        horizon = max(horizon, *(g[2] for g in gone[:-MAX_GONE]))
        gone = gone[-MAX_GONE:]
    return State(version, horizon, new_items, gone).dumps()
