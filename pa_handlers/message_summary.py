"""The documents of the message-summary event package (RFC 3842, the
message-waiting lamp): the voicemail server PUBLISHes a
simple-message-summary body, the newest live publication is the
mailbox's state, and a mailbox nobody published for is
`Messages-Waiting: no` (a summary is due as soon as a subscription is
accepted, 3.8).

The body is read strictly by the grammar of 5.2 (400 otherwise): the
status line, an optional Message-Account, summary lines of the RFC 3458
message classes with counts below 2**32.  The optional message headers
after a blank line are not kept: they may only describe messages new
since the watcher's last NOTIFY and must not be in the first one, which
a summary shared by every watcher cannot know.  Lines may end in CRLF or
a bare LF; the NOTIFY's lines end in CRLF.
"""

from __future__ import annotations

import re

from . import pidf
from .config import Settings
from .package_documents import SingleFormatDocuments
from .records import StoredPublication, Subscription

SIMPLE_MESSAGE_SUMMARY = "application/simple-message-summary"
NOT_WAITING = "Messages-Waiting: no\r\n"

_STATUS = re.compile(r"messages-waiting[ \t]*:[ \t]*(yes|no)[ \t]*", re.I)
_ACCOUNT = re.compile(r"message-account[ \t]*:[ \t]*[A-Za-z][A-Za-z0-9+.-]*:[^\s<>]+[ \t]*", re.I)
_CLASSES = "voice-message|fax-message|pager-message|multimedia-message|text-message|none"
_SUMMARY = re.compile(rf"(?:{_CLASSES})[ \t]*:[ \t]*(\d{{1,10}})[ \t]*/[ \t]*(\d{{1,10}})"
                      r"(?:[ \t]*\([ \t]*(\d{1,10})[ \t]*/[ \t]*(\d{1,10})[ \t]*\))?[ \t]*", re.I)


def parse_summary(body: bytes, max_bytes: int) -> str:
    """The summary as kept and sent (its lines as published, CRLF ended),
    or InvalidDocument (400; 413 over max_bytes)."""
    if len(body) > max_bytes:
        raise pidf.InvalidDocument("Document Too Large", code=413)
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise pidf.InvalidDocument("Summary Not ASCII") from None
    lines = text.replace("\r\n", "\n").split("\n")
    summary = lines[:lines.index("")] if "" in lines else lines
    if not summary or not _STATUS.fullmatch(summary[0]):
        raise pidf.InvalidDocument("Summary Without Messages-Waiting")
    rest = summary[1:]
    if rest and _ACCOUNT.fullmatch(rest[0]):
        rest = rest[1:]
    for line in rest:
        m = _SUMMARY.fullmatch(line)
        if m is None:
            raise pidf.InvalidDocument("Bad Summary Line")
        if any(int(n) > 2**32 - 1 for n in m.groups() if n is not None):
            raise pidf.InvalidDocument("Summary Count Too Large")
    return "".join(line.strip() + "\r\n" for line in summary)


class MessageSummaryDocuments(SingleFormatDocuments):
    kind = "simple-message-summary"
    formats = publish_types = (SIMPLE_MESSAGE_SUMMARY,)
    too_large = "Summary Too Large"
    empty_state = "Messages-Waiting: no"

    @staticmethod
    def parse(body: bytes, settings: Settings) -> bytes:
        return parse_summary(body, settings.max_document_bytes).encode()

    @staticmethod
    def compose(presentity: str, stored: list[StoredPublication], settings: Settings,
                refuse: bool, previous: bytes | None = None) -> bytes:
        """The newest live publication (refreshed or modified last; of
        equals, the one made last): no aggregation, as RFC 3842 has none
        across publishers."""
        if not stored:
            return b""
        newest = max(enumerate(stored), key=lambda p: (p[1].updated_at, p[0]))[1]
        return newest.parts

    @staticmethod
    def view(sub: Subscription) -> tuple:
        return ("summary", sub.presentity)

    @staticmethod
    def render(document: bytes | None, sub: Subscription, partial: bool = False) -> str:
        return document.decode() if document else NOT_WAITING


MESSAGE_SUMMARY_DOCUMENTS = MessageSummaryDocuments()
