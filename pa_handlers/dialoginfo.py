"""The documents of the dialog event package (RFC 4235, the busy-lamp
field): dialog-info publications from any number of publishers (proxies
running pua_dialoginfo, PBXs, phones) aggregated per entity, and rendered
for each watcher with its own version.

A publication is parsed once into its dialogs (id, state, the element as
published); the entity's document is the union of the live publications'
dialogs, a later publication's dialog replacing an earlier one with the
same id (forked calls and several early dialogs keep their own ids).  A
dialog published as terminated is shown once: the document composed next
leaves it out, so a terminated dialog never lingers in the lamps.

The first NOTIFY of a subscription, and every one a SUBSCRIBE triggers,
carries full state; a NOTIFY that tells a change carries the dialogs
changed (or gone: as terminated) since the document the watcher
acknowledged (partial_state.py; full when that cannot be known).
`version` counts the subscription's NOTIFYs from 0 (the NOTIFY's CSeq
minus one), so every watcher has its own, rising by one per NOTIFY.
"""

from __future__ import annotations

import json
import logging
from xml.sax.saxutils import quoteattr

from lxml import etree

from . import partial_state, pidf, xmlsafe
from .config import Settings
from .package_documents import VersionedDocuments
from .records import StoredPublication, Subscription

log = logging.getLogger("pa.compositor")

DIALOG_INFO = "application/dialog-info+xml"
NS = "urn:ietf:params:xml:ns:dialog-info"
STATES = ("trying", "proceeding", "early", "confirmed", "terminated")
DIRECTIONS = ("initiator", "recipient")
MAX_ID = 256


def _invalid(reason: str) -> pidf.InvalidDocument:
    return pidf.InvalidDocument(reason)


def parse_dialogs(body: bytes, max_dialogs: int, max_bytes: int) -> list[list[str]]:
    """A published dialog-info document as [id, state, element] per dialog;
    InvalidDocument (400, 413 beyond the limits) otherwise."""
    try:
        root = xmlsafe.parse(body, max_bytes)
    except xmlsafe.UnsafeXml as e:
        raise pidf.InvalidDocument(e.reason, code=413 if e.too_large else 400) from None
    if root.tag != f"{{{NS}}}dialog-info":
        raise _invalid("Not A dialog-info Document")
    version = root.get("version", "")
    if not version.isdigit() or int(version) > 2**32 - 1:
        raise _invalid("dialog-info Without Valid Version")
    if root.get("state") not in ("full", "partial"):
        raise _invalid("dialog-info Without Valid State")
    if not root.get("entity"):
        raise _invalid("dialog-info Without Entity")
    elements = [child for child in root if child.tag == f"{{{NS}}}dialog"]
    if len(elements) > max_dialogs:
        raise pidf.InvalidDocument("Too Many Dialogs", code=413)
    dialogs: dict[str, list[str]] = {}
    for element in elements:
        dialog_id = element.get("id", "")
        if not dialog_id or len(dialog_id) > MAX_ID:
            raise _invalid("Dialog Without Valid Id")
        if element.get("direction") not in (None, *DIRECTIONS):
            raise _invalid("Dialog With Bad Direction")
        state = element.find(f"{{{NS}}}state")
        value = (state.text or "").strip().lower() if state is not None else ""
        # pua_dialoginfo writes "Trying": read case-insensitively, sent
        # as the RFC spells it.
        if value not in STATES:
            raise _invalid("Dialog Without Valid State")
        state.text = value
        code = state.get("code")
        if code is not None and not (code.isdigit() and 100 <= int(code) <= 699):
            raise _invalid("Dialog State With Bad Code")
        # The element keeps the namespace declarations it needs, so it can
        # be placed in any document as it is.
        dialogs[dialog_id] = [dialog_id, value,
                              etree.tostring(element, encoding="unicode", with_tail=False)]
    return list(dialogs.values())


def _document(entity: str, version: int, dialogs: list[str], state: str = "full") -> str:
    head = (f'<?xml version="1.0" encoding="UTF-8"?>\n<dialog-info xmlns="{NS}"'
            f' version="{version}" state="{state}" entity={quoteattr(entity)}')
    if not dialogs:
        return head + "/>\n"
    return head + ">" + "".join(dialogs) + "</dialog-info>\n"


def _ended(dialog_id: str, content: list) -> tuple[list, bool]:
    """A dialog that left the document, as partial state tells it: as it
    was when it had ended already, else terminated (its publication
    expired or was removed)."""
    if content[0] == "terminated":
        return content, True
    return ["terminated", f'<dialog xmlns="{NS}" id={quoteattr(dialog_id)}>'
                          f'<state>terminated</state></dialog>'], False


class DialogDocuments(VersionedDocuments):
    kind = "dialog-info"
    formats = publish_types = (DIALOG_INFO,)
    too_large = "Dialog Document Too Large"
    empty_state = "a dialog-info without dialogs"

    @staticmethod
    def parse(body: bytes, settings: Settings) -> bytes:
        return json.dumps(parse_dialogs(body, settings.max_publication_elements,
                                        settings.max_document_bytes)).encode()

    @staticmethod
    def compose(presentity: str, stored: list[StoredPublication], settings: Settings,
                refuse: bool, previous: bytes | None = None) -> bytes:
        """The entity's dialogs (partial_state's form, b"" before any): the
        union of the live publications', without those the previous
        document already showed terminated.  Over max_document_bytes,
        `refuse` raises TooLarge; otherwise the last dialogs are left out."""
        shown = {i[0] for i in partial_state.State.loads(previous).items
                 if i[1][0] == "terminated"}
        dialogs: dict[str, list[str]] = {}
        for publication in stored:
            for dialog in json.loads(publication.parts):
                dialogs.pop(dialog[0], None)    # the later publication's, in its order
                if not (dialog[1] == "terminated" and dialog[0] in shown):
                    dialogs[dialog[0]] = dialog
        kept = list(dialogs.values())
        limit = settings.max_document_bytes
        size = len(_document(pidf.entity(presentity), 2**32 - 1, [d[2] for d in kept]))
        if size > limit:
            if refuse:
                raise pidf.DocumentTooLarge(presentity)
            while kept and size > limit:
                size -= len(kept.pop()[2])
            log.warning("dialogs of %s over max_document_bytes (%d): %d left out",
                        presentity, limit, len(dialogs) - len(kept))
        return partial_state.compose([(d[0], [d[1], d[2]]) for d in kept], previous, _ended)

    @staticmethod
    def render(document: bytes | None, sub: Subscription, partial: bool = False) -> str:
        """Full state, or with `partial` (a NOTIFY that tells a change) the
        dialogs changed or gone since the document the watcher
        acknowledged (RFC 4235 4.1; a document without dialogs is full)."""
        entity, version = pidf.entity(sub.presentity), max(sub.local_cseq - 1, 0)
        everything, changed = partial_state.shown(document, sub.told_version, partial)
        if changed is None:
            return _document(entity, version, [c[1] for c in everything])
        return _document(entity, version, [c[1] for c in changed], "partial")


DIALOG_DOCUMENTS = DialogDocuments()
