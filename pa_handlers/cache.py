"""What a process remembers of documents it parsed: results keyed by a
digest of the document (never by the document itself), the least recently
used dropped first, the whole bounded by an estimate of the bytes it holds
(the setting cache_bytes, per process).

A document that arrives again (the same aggregate for every watcher of a
fan-out, the same pres-rules for every SUBSCRIBE) is parsed once; a
stream of distinct documents costs at most cache_bytes.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import sys
from typing import Callable, Hashable, TypeVar

from .config import DEFAULT_CACHE_BYTES

T = TypeVar("T")

# What one entry costs besides its value: the key tuple, the digest, the
# ordered dict's node.
_ENTRY_OVERHEAD = 200


def digest(document: bytes) -> bytes:
    return hashlib.blake2b(document, digest_size=16).digest()


class ByteBoundedCache:
    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: collections.OrderedDict[Hashable, tuple[object, int]] = \
            collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def resize(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._shrink()

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        """The value of `key`, computed (and kept, if it fits) when absent.
        An exception from `compute` is not remembered."""
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
            return entry[0]
        value = compute()
        size = size_of(value) + _ENTRY_OVERHEAD
        if size <= self.max_bytes:
            self._entries[key] = (value, size)
            self.bytes += size
            self._shrink()
        return value

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0

    def _shrink(self) -> None:
        while self.bytes > self.max_bytes:
            _, (_, size) = self._entries.popitem(last=False)
            self.bytes -= size


def size_of(value: object) -> int:
    """An estimate of the memory `value` holds: what sys.getsizeof says of
    it and of everything it contains (strings, tuples, sets, dataclasses).
    Run once per entry, on a miss, after the parse it caches."""
    total, stack, seen = 0, [value], set()
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        if isinstance(obj, (str, bytes, int, float, bool)) or obj is None:
            continue
        if isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, (tuple, list, set, frozenset)):
            stack.extend(obj)
        elif dataclasses.is_dataclass(obj):
            stack.extend(getattr(obj, f.name) for f in dataclasses.fields(obj))
    return total


# The process's cache of parsed documents, shared by pidf (summaries and
# filtered views of aggregates) and presrules (parsed rules); sized from
# the settings when the presence agent starts.
DOCUMENTS = ByteBoundedCache(DEFAULT_CACHE_BYTES)
