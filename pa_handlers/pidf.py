"""Presence documents (PIDF, RFC 3863)."""

from __future__ import annotations

from xml.sax.saxutils import quoteattr

PIDF = "application/pidf+xml"

# Formats a watcher may ask for in Accept, in server preference order.
PRESENCE_FORMATS = (PIDF,)


def entity(presentity: str) -> str:
    return "sip:" + presentity


def closed_document(presentity: str) -> bytes:
    """What a presentity that nobody published for looks like: one closed
    tuple (clients such as Windows Messenger and linphone need a tuple)."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity={quoteattr(entity(presentity))}>\n'
        '  <tuple id="pa-closed"><status><basic>closed</basic></status></tuple>\n'
        '</presence>\n'
    ).encode()


def render(document: bytes | None, presentity: str, content_type: str) -> str:
    """The NOTIFY body for a stored aggregate document (None: nothing
    published) in the format the subscription negotiated."""
    return (document or closed_document(presentity)).decode("utf-8")
