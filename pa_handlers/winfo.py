"""Watcher information (RFC 3857 package presence.winfo, RFC 3858 format):
how a presentity learns who watches it, and of pending watchers.

Each presence subscription is one <watcher>, its id the subscription's.
The first NOTIFY of a winfo subscription (and each refresh) carries the
full list; later ones carry only the watchers that changed ("partial").
A document's version is its NOTIFY's CSeq minus one, so it starts at 0 and
grows by one per NOTIFY of the subscription, whichever process sends it.

What one watcher can add is bounded: at most max_winfo_entries_per_watcher
of its subscriptions are listed (RFC 3858 gives each subscription its
element, but the presentity decides per watcher), each display name is cut
to max_display_name characters, and a document longer than
max_document_bytes lists pending watchers first (those the presentity
must decide on) and leaves out what does not fit.  So one account sending
hundreds of SUBSCRIBEs cannot push the presentity's own view of its
watchers past what a NOTIFY can carry.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from xml.sax.saxutils import escape, quoteattr

from .config import Settings
from .records import Subscription

log = logging.getLogger("pa.winfo")

WATCHERINFO = "application/watcherinfo+xml"
WINFO_NS = "urn:ietf:params:xml:ns:watcherinfo"

# RFC 3857 3.4.2 events.
SUBSCRIBE, APPROVED, DEACTIVATED, REJECTED, TIMEOUT = (
    "subscribe", "approved", "deactivated", "rejected", "timeout")


@dataclasses.dataclass(frozen=True)
class WatcherEntry:
    id: str
    uri: str
    status: str        # pending | active | terminated
    event: str
    display: str
    expiration: int


def entry(sub: Subscription, event: str, now: int, status: str | None = None) -> WatcherEntry:
    status = status or sub.status
    return WatcherEntry(id=f"w{sub.id}", uri="sip:" + sub.watcher, status=status, event=event,
                        display=sub.watcher_display,
                        expiration=max(sub.expires_at - now, 0) if status != "terminated" else 0)


@dataclasses.dataclass(frozen=True)
class Limits:
    entries_per_watcher: int
    display_name: int
    max_bytes: int

    @classmethod
    def of(cls, settings: Settings) -> "Limits":
        return cls(settings.max_winfo_entries_per_watcher, settings.max_display_name,
                   settings.max_document_bytes)


def document(presentity: str, version: int, full: bool, entries: list[WatcherEntry],
             limits: Limits, *, package: str) -> str:
    """The watcher list of `presentity`'s subscriptions to `package`."""
    head = ['<?xml version="1.0" encoding="UTF-8"?>',
            f'<watcherinfo xmlns="{WINFO_NS}" version="{version}"'
            f' state="{"full" if full else "partial"}">',
            f'<watcher-list resource={quoteattr("sip:" + presentity)}'
            f' package={quoteattr(package)}>']
    tail = ["</watcher-list>", "</watcherinfo>", ""]
    per_watcher: collections.Counter[str] = collections.Counter()
    listed = []
    for e in entries:
        per_watcher[e.uri] += 1
        if per_watcher[e.uri] <= limits.entries_per_watcher:
            listed.append((e, _watcher(e, limits.display_name)))
    # Each line costs its bytes and a newline; the last ("") has none.
    budget = limits.max_bytes + 1 - sum(len(line.encode()) + 1 for line in head + tail)
    kept = _fitting(listed, budget)
    if len(kept) < len(listed):
        log.warning("watcher-info of %s over max_document_bytes (%d): %d of %d watchers"
                    " left out", presentity, limits.max_bytes, len(listed) - len(kept),
                    len(listed))
    return "\n".join(head + [line for i, (_, line) in enumerate(listed) if i in kept] + tail)


def _watcher(e: WatcherEntry, display_chars: int) -> str:
    display = e.display[:display_chars]
    display = f" display-name={quoteattr(display)}" if display else ""
    return (f"<watcher id={quoteattr(e.id)} status=\"{e.status}\" event=\"{e.event}\""
            f"{display} expiration=\"{e.expiration}\">{escape(e.uri)}</watcher>")


def _fitting(listed: list[tuple[WatcherEntry, str]], budget: int) -> set[int]:
    """The indexes of the entries that fit `budget` bytes: pending ones
    first (the presentity has to decide on them), then the others, each
    group in order."""
    order = sorted(range(len(listed)), key=lambda i: listed[i][0].status != "pending")
    kept: set[int] = set()
    for i in order:
        size = len(listed[i][1].encode()) + 1
        if size <= budget:
            kept.add(i)
            budget -= size
    return kept
