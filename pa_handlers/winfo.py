"""Watcher information (RFC 3857 package presence.winfo, RFC 3858 format):
how a presentity learns who watches it, and of pending watchers.

Each presence subscription is one <watcher>, its id the subscription's.
The first NOTIFY of a winfo subscription (and each refresh) carries the
full list; later ones carry only the watchers that changed ("partial").
A document's version is its NOTIFY's CSeq minus one, so it starts at 0 and
grows by one per NOTIFY of the subscription, whichever process sends it.
"""

from __future__ import annotations

import dataclasses
from xml.sax.saxutils import escape, quoteattr

from .subscription import Subscription

WATCHERINFO = "application/watcherinfo+xml"
WINFO_NS = "urn:ietf:params:xml:ns:watcherinfo"
PACKAGE = "presence.winfo"

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


def document(presentity: str, version: int, full: bool, entries: list[WatcherEntry]) -> str:
    lines = ['<?xml version="1.0" encoding="UTF-8"?>',
             f'<watcherinfo xmlns="{WINFO_NS}" version="{version}"'
             f' state="{"full" if full else "partial"}">',
             f'<watcher-list resource={quoteattr("sip:" + presentity)} package="presence">']
    for e in entries:
        display = f" display-name={quoteattr(e.display)}" if e.display else ""
        lines.append(f"<watcher id={quoteattr(e.id)} status=\"{e.status}\" event=\"{e.event}\""
                     f"{display} expiration=\"{e.expiration}\">{escape(e.uri)}</watcher>")
    lines += ["</watcher-list>", "</watcherinfo>", ""]
    return "\n".join(lines)
