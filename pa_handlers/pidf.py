"""Presence documents: parsing published PIDF (RFC 3863) safely, keeping
its parts ready to aggregate, composing the aggregate of a presentity, and
rendering it in every format SER served.

A publication is parsed once, when it arrives.  What aggregation needs is
stored as serialized fragments (`Parts`), so composing a presentity's
document is string work on stored bytes, never a re-parse.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from xml.sax.saxutils import quoteattr

from lxml import etree

from . import cache, presrules, xmlsafe

PIDF_NS = "urn:ietf:params:xml:ns:pidf"
PIDF = "application/pidf+xml"
CPIM_PIDF = "application/cpim-pidf+xml"
XPIDF = "application/xpidf+xml"
LPIDF = "text/lpidf"

# What a PUBLISH may carry (RFC 3903 with RFC 3863 bodies).
PUBLISH_TYPES = (PIDF, CPIM_PIDF)

# What a watcher may ask for in Accept, in server preference order.  SER
# called the last format application/lpidf+xml and sent it as text/lpidf.
PRESENCE_FORMATS = (PIDF, CPIM_PIDF, XPIDF, "application/lpidf+xml", LPIDF)
_SENT_AS = {"application/lpidf+xml": LPIDF}

MAX_DOCUMENT_BYTES = 64 * 1024
_TUPLE = f"{{{PIDF_NS}}}tuple"
_NOTE = f"{{{PIDF_NS}}}note"
_STATUS_BASIC = f"{{{PIDF_NS}}}status/{{{PIDF_NS}}}basic"
_CONTACT = f"{{{PIDF_NS}}}contact"
_NCNAME = re.compile(r"^[A-Za-z_][A-Za-z0-9._-]*$")


class InvalidDocument(Exception):
    """A body that is not an acceptable presence document (400)."""

    def __init__(self, reason: str, code: int = 400):
        super().__init__(reason)
        self.reason = reason
        self.code = code


class DocumentTooLarge(Exception):
    """An aggregate over the size limit (413 to the PUBLISH that made it)."""


def sent_as(content_type: str) -> str:
    return _SENT_AS.get(content_type, content_type)


def entity(presentity: str) -> str:
    return "sip:" + presentity


# -- a publication's parts --------------------------------------------------

@dataclasses.dataclass
class Tuple:
    id: str
    basic: str          # "open", "closed" or "" when the tuple gives none
    contact: str
    priority: str
    xml: str            # the <tuple> element, serialized with its namespaces


@dataclasses.dataclass
class Parts:
    """What aggregation needs of one published document."""
    tuples: list[Tuple]
    notes: list[str]            # presentity-level <note> elements
    extensions: list[str]       # other top-level elements (RPID person, device, ...)
    # The device a registration binding stands for (see precedence.py);
    # stored only when there are any.
    devices: list[str] = dataclasses.field(default_factory=list)

    def dumps(self) -> bytes:
        tuples = [(t.id, t.basic, t.contact, t.priority, t.xml) for t in self.tuples]
        fields = [tuples, self.notes, self.extensions] + ([self.devices] if self.devices else [])
        return json.dumps(fields, separators=(",", ":")).encode()

    @classmethod
    def loads(cls, data: bytes) -> "Parts":
        tuples, notes, extensions, *devices = json.loads(data)
        return cls([Tuple(*t) for t in tuples], notes, extensions, *devices)


def parse_publication(body: bytes, default_priority: float,
                      max_elements: int | None = None) -> Parts:
    """Parse a published document as hostile input (see xmlsafe).  Tuples
    whose <contact> has no priority get `default_priority`.  More than
    `max_elements` top-level elements (tuples, notes, extensions) is 413."""
    try:
        root = xmlsafe.parse(body, MAX_DOCUMENT_BYTES)
    except xmlsafe.UnsafeXml as e:
        raise InvalidDocument(e.reason, code=413 if e.too_large else 400) from None
    if root.tag != f"{{{PIDF_NS}}}presence":
        raise InvalidDocument("Not A PIDF Presence Document")
    if not root.get("entity"):
        raise InvalidDocument("PIDF Without Entity")

    parts = Parts([], [], [])
    priority = qvalue(default_priority)
    count = 0
    for child in root:
        if not isinstance(child.tag, str):
            continue
        count += 1
        if max_elements is not None and count > max_elements:
            raise InvalidDocument("Too Many Elements", code=413)
        if child.tag == _TUPLE:
            parts.tuples.append(_tuple(child, priority))
        elif child.tag == _NOTE:
            parts.notes.append(_fragment(child))
        else:
            parts.extensions.append(_fragment(child))
    return parts


def _tuple(element, default_priority: str) -> Tuple:
    tuple_id = element.get("id", "")
    if not _NCNAME.match(tuple_id):
        raise InvalidDocument("Tuple Without Valid id")
    basic = (element.findtext(_STATUS_BASIC) or "").strip()
    if basic not in ("open", "closed", ""):
        raise InvalidDocument("Bad Basic Status")
    contact = element.find(_CONTACT)
    contact_uri, priority = "", ""
    if contact is not None:
        contact_uri = (contact.text or "").strip()
        priority = contact.get("priority") or default_priority
        contact.set("priority", priority)
    return Tuple(tuple_id, basic, contact_uri, priority, _fragment(element))


def _fragment(element) -> str:
    """The element alone, with just the namespace declarations it uses."""
    element = copy.deepcopy(element)
    element.tail = None
    etree.cleanup_namespaces(element)
    return etree.tostring(element, encoding="unicode")


def qvalue(value: float) -> str:
    """RFC 3863 qvalue: 0.5, 1, 0, 0.125."""
    return f"{value:.3f}".rstrip("0").rstrip(".")


# -- the aggregate ------------------------------------------------------------

def compose(presentity: str, publications: list[Parts]) -> bytes:
    """The presentity's document: the union of `publications`, in the
    given order (the given order is the output order).  Ids are kept where
    unique and renamed where two publications collide; identical notes and
    extensions appear once.  Returns b"" when nothing is published.
    Linear in the size of the publications, whatever their ids."""
    if not publications:
        return b""
    ids = _Ids()
    tuples = [ids.unique(t.xml, t.id) for parts in publications for t in parts.tuples]
    # dict keys: the first occurrence of each, in order, found in O(1).
    notes = dict.fromkeys(note for parts in publications for note in parts.notes)
    extensions = dict.fromkeys(ext for parts in publications for ext in parts.extensions)
    extensions = [ids.unique_element(ext) for ext in extensions]
    if not tuples:
        # Clients such as Windows Messenger and linphone need a tuple.
        tuples.append(_CLOSED_TUPLE)
    return "".join([_head(presentity), *tuples, *notes, *extensions, "</presence>\n"]).encode()


def compose_within(presentity: str, publications: list[Parts],
                   max_bytes: int) -> tuple[bytes, int]:
    """compose(), leaving out publications from the end of the list until
    the document has at most `max_bytes`; returns (document, how many were
    left out).  A binary search: O(log n) compositions."""
    document = compose(presentity, publications)
    if len(document) <= max_bytes:
        return document, 0
    fits, fitting = 0, b""
    low, high = 1, len(publications) - 1
    while low <= high:
        middle = (low + high) // 2
        candidate = compose(presentity, publications[:middle])
        if len(candidate) <= max_bytes:
            fits, fitting, low = middle, candidate, middle + 1
        else:
            high = middle - 1
    return fitting, len(publications) - fits


def _head(presentity: str) -> str:
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<presence xmlns="{PIDF_NS}" entity={quoteattr(entity(presentity))}>')


_CLOSED_TUPLE = '<tuple id="pa-closed"><status><basic>closed</basic></status></tuple>'
_ID_ATTR = re.compile(r'^(<[^>]*?\sid=")([^"]*)(")')


class _Ids:
    """The ids used so far in one document.  A colliding id becomes
    `id-2`, `id-3`...; the next suffix to try is remembered per id, so n
    copies of one id cost O(n), not O(n²)."""

    def __init__(self):
        self.used: set[str] = set()
        self.next_suffix: dict[str, int] = {}

    def unique(self, xml: str, element_id: str) -> str:
        new_id = element_id
        if new_id in self.used:
            n = self.next_suffix.get(element_id, 2)
            while f"{element_id}-{n}" in self.used:
                n += 1
            new_id = f"{element_id}-{n}"
            self.next_suffix[element_id] = n + 1
        self.used.add(new_id)
        if new_id == element_id:
            return xml
        return _ID_ATTR.sub(lambda m: m.group(1) + new_id + m.group(3), xml, count=1)

    def unique_element(self, xml: str) -> str:
        m = _ID_ATTR.match(xml)
        return self.unique(xml, m.group(2)) if m else xml


def closed_document(presentity: str) -> bytes:
    """What a presentity that nobody published for looks like: one closed
    tuple (clients such as Windows Messenger and linphone need a tuple)."""
    return (_head(presentity) + _CLOSED_TUPLE + "</presence>\n").encode()


# -- rendering ------------------------------------------------------------------

def render(document: bytes | None, presentity: str, content_type: str,
           permissions: int = presrules.EVERYTHING) -> str:
    """The NOTIFY body for a stored aggregate (empty or None: nothing
    published) in the format the subscription negotiated, showing what the
    watcher's permissions (RFC 5025 transformations) allow."""
    if not document or permissions == presrules.NOTHING:
        document = closed_document(presentity)
    elif permissions != presrules.EVERYTHING:
        view = document
        document = cache.DOCUMENTS.get(("view", cache.digest(view), presentity, permissions),
                                       lambda: _view(view, presentity, permissions))
    if content_type in (PIDF, CPIM_PIDF):
        return document.decode("utf-8")
    summary = cache.DOCUMENTS.get(("summary", cache.digest(document)),
                                  lambda: _summary(document))
    if content_type == XPIDF:
        return _xpidf(presentity, summary)
    return _lpidf(presentity, summary)


DM_NS = "urn:ietf:params:xml:ns:pidf:data-model"


def _view(document: bytes, presentity: str, permissions: int) -> bytes:
    """The aggregate with only what `permissions` allow: tuples and
    presentity notes (services), <dm:person> (persons), <dm:device>
    (devices); other extensions go with any permission."""
    root = etree.fromstring(document, xmlsafe.PARSER)
    allowed = {_TUPLE: presrules.SERVICES, _NOTE: presrules.SERVICES,
               f"{{{DM_NS}}}person": presrules.PERSONS, f"{{{DM_NS}}}device": presrules.DEVICES}
    for child in list(root):
        if not permissions & allowed.get(child.tag, presrules.EVERYTHING):
            root.remove(child)
    if root.find(_TUPLE) is None:
        root.insert(0, etree.fromstring(_CLOSED_TUPLE.replace(
            "<tuple ", f'<tuple xmlns="{PIDF_NS}" ', 1)))
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def _summary(document: bytes) -> tuple[tuple[str, str, str, str], ...]:
    """(id, basic, contact, priority) of each tuple of an aggregate we
    composed ourselves (render caches it, so a fan-out parses it once)."""
    root = etree.fromstring(document, xmlsafe.PARSER)
    rows = []
    for t in root.iterfind(_TUPLE):
        contact = t.find(_CONTACT)
        rows.append((t.get("id", ""), (t.findtext(_STATUS_BASIC) or "closed").strip(),
                     (contact.text or "").strip() if contact is not None else "",
                     contact.get("priority", "") if contact is not None else ""))
    return tuple(rows)


def _xpidf(presentity: str, summary) -> str:
    # The pre-standard format of Windows Messenger era clients, as SER sent it.
    uri = entity(presentity)
    lines = ['<?xml version="1.0"?>',
             '<!DOCTYPE presence PUBLIC "-//IETF//DTD RFCxxxx XPIDF 1.0//EN" "xpidf.dtd">',
             "<presence>",
             f"<presentity uri={quoteattr(uri + ';method=SUBSCRIBE')}/>"]
    for tuple_id, basic, contact, priority in summary:
        is_open = basic == "open"
        lines += [f"<atom id={quoteattr(tuple_id)}>",
                  f"<address uri={quoteattr(uri + ';user=ip')}"
                  f" priority={quoteattr(priority or '0.8')}>",
                  f'<status status="{"open" if is_open else "closed"}"/>',
                  f'<msnsubstatus substatus="{"online" if is_open else "offline"}"/>',
                  "</address>", "</atom>"]
    lines.append("</presence>")
    return "\r\n".join(lines) + "\r\n"


def _lpidf(presentity: str, summary) -> str:
    # SER's lightweight format: the presentity, then one line per tuple
    # with q=1 when it is open and q=0 when closed.
    lines = [f"To: <{entity(presentity)}>"]
    for _, basic, contact, _ in summary:
        q = "1" if basic == "open" else "0"
        contact = "".join(contact.split()) or entity(presentity)
        lines.append(f"Contact: <{contact}>;q={q}")
    return "\r\n".join(lines) + "\r\n"
