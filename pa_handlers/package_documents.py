"""What the document code of an event package (the `documents` of a
packages.EventPackage) provides, with the defaults of a package of one
body format; presence.PresenceDocuments is the full example.

    kind            the format's name, for logs and pa-admin
    formats         what a watcher may ask for (Accept), first the default
    publish_types   what a PUBLISH may carry (none: not published)
    InvalidDocument, TooLarge, too_large
                    what parse/compose raise, and the 413's reason phrase
    versioned       whether a body carries the subscription's own version
    empty_state     what watchers see when nothing is published (pa-admin)
    sent_as, parse, compose, view, render: see PresenceDocuments
"""

from __future__ import annotations

from . import pidf
from .records import Subscription


class SingleFormatDocuments:
    """The defaults of a package with one body format, sent as named."""
    kind = ""
    formats: tuple[str, ...] = ()
    publish_types: tuple[str, ...] = ()
    InvalidDocument = pidf.InvalidDocument
    TooLarge = pidf.DocumentTooLarge
    too_large = "Document Too Large"
    versioned = False
    empty_state = ""

    @staticmethod
    def sent_as(content_type: str) -> str:
        return content_type


class VersionedDocuments(SingleFormatDocuments):
    """A package whose every body carries the subscription's own version
    (the NOTIFY's CSeq minus one) and may be partial (partial_state.py):
    every watcher's body is its own."""
    versioned = True

    def view(self, sub: Subscription) -> tuple:
        return (self.kind, sub.presentity, sub.local_cseq, sub.told_version)
