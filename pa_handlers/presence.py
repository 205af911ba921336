"""The documents of the presence event package (RFC 3856): PIDF
publications (RFC 3863, pidf.py) parsed once, arranged by the composition
rule (precedence.py), composed into a presentity's document within
max_document_bytes, and rendered in the format and view each watcher
negotiated."""

from __future__ import annotations

import logging

from . import pidf, precedence
from .config import Settings
from .records import StoredPublication, Subscription

log = logging.getLogger("pa.compositor")


class PresenceDocuments:
    kind = "PIDF"
    formats = pidf.PRESENCE_FORMATS
    publish_types = pidf.PUBLISH_TYPES
    # What parse and compose refuse with: InvalidDocument (its code, 400 or
    # 413) and DocumentTooLarge (413).
    InvalidDocument = pidf.InvalidDocument
    TooLarge = pidf.DocumentTooLarge
    too_large = "Presence Document Too Large"   # the 413's reason phrase
    versioned = False
    empty_state = "one closed tuple"   # what watchers see when nothing is published (pa-admin)

    @staticmethod
    def sent_as(content_type: str) -> str:
        return pidf.sent_as(content_type)

    @staticmethod
    def parse(body: bytes, settings: Settings) -> bytes:
        """A published document as stored: its parts, ready to compose."""
        return pidf.parse_publication(body, settings.default_priority,
                                      settings.max_publication_elements).dumps()

    @staticmethod
    def compose(presentity: str, stored: list[StoredPublication], settings: Settings,
                refuse: bool, previous: bytes | None = None) -> bytes:
        """The presentity's document from its live publications, at most
        max_document_bytes.  Over it, `refuse` raises DocumentTooLarge (the
        change is rolled back: a PUBLISH gets 413); otherwise the
        publications that do not fit are left out, last first, and the log
        says so (changes nobody can refuse: registrations, XMPP, expiry)."""
        limit = settings.max_document_bytes
        publications = precedence.arrange(stored)
        if refuse:
            document = pidf.compose(presentity, publications)
            if len(document) > limit:
                raise pidf.DocumentTooLarge(presentity)
            return document
        document, left_out = pidf.compose_within(presentity, publications, limit)
        if left_out:
            log.warning("document of %s over max_document_bytes (%d): %d of %d publications"
                        " left out", presentity, limit, left_out, len(publications))
        return document

    @staticmethod
    def view(sub: Subscription) -> tuple:
        """What a watcher's body depends on besides the document: watchers
        with the same view get the same body, rendered once."""
        return (sub.presentity, sub.content_type, sub.permissions)

    @staticmethod
    def render(document: bytes | None, sub: Subscription, partial: bool = False) -> str:
        """The NOTIFY body: the document as this watcher may see it, in its
        format."""
        return pidf.render(document, sub.presentity, sub.content_type, sub.permissions)


PRESENCE_DOCUMENTS = PresenceDocuments()
