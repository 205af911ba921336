"""Presence interworking between XMPP and SIP: pure functions mapping XMPP
<presence/> stanzas (as plain values) to PIDF documents and back.

The mapping is RFC 8048 ("SIP-XMPP Interworking: Presence"), which
obsoletes RFC 7248.  Both were checked; where they differ we follow
RFC 8048:

- RFC 7248 says SHOULD for both tables, RFC 8048 says MUST (sections 6.2
  and 6.3, the sentence before each table);
- RFC 7248 maps the stanza 'id' to CSeq (optional), RFC 8048 maps it to
  nothing (Table 1, note 3) -- XmppPresence has no id anyway;
- on type='unavailable', RFC 7248 section 5.2 note 5 also sends a
  SUBSCRIBE with Expires: 0; RFC 8048 section 6.2 note 5 only sends the
  closed basic status.  Here: a closed tuple, nothing else.

RFC 8048 section 6.1 restricts itself to basic availability: <show/> has
"no mapping" (Table 1, note 7); the RECOMMENDED practice is to carry the
XMPP <show/> element (namespace 'jabber:client') inside the PIDF document,
and a gateway may also translate <show/> to and from a custom extension
"that the gateway knows is supported", keeping both to avoid information
loss.  SIP user agents understand RPID (RFC 4480) far more often than
'jabber:client', so both directions also use RPID <activities> (and
<user-input>); that translation table is ours, not the RFC's.

No network, no database, no KSR, no XMPP library: the gateway calls these.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re

from lxml import etree

from . import pidf, xmlsafe

PIDF_NS = pidf.PIDF_NS                                  # RFC 3863
RPID_NS = "urn:ietf:params:xml:ns:pidf:rpid"            # RFC 4480
DM_NS = "urn:ietf:params:xml:ns:pidf:data-model"        # RFC 4479
JABBER_CLIENT_NS = "jabber:client"                      # RFC 6121, in PIDF per RFC 8048 6.2 note 7
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"

SHOWS = ("away", "chat", "dnd", "xa")                   # RFC 6121 4.7.2.1

# An aggregate is the union of publications of at most MAX_DOCUMENT_BYTES
# each; xmlsafe still bounds its depth and element count.
MAX_AGGREGATE_BYTES = 16 * pidf.MAX_DOCUMENT_BYTES

# Bounds on what an XMPP peer can make us publish, so that the document
# always stays under pidf.MAX_DOCUMENT_BYTES (a status of MAX_STATUS_CHARS
# escapes to at most 5 bytes a character; see the tests' worst case).
MAX_RESOURCES = 10
MAX_STATUS_CHARS = 1000
MAX_PLAIN_RESOURCE = 64
# RFC 7622 3.4: a resourcepart is 1 to 1023 octets of UTF-8.
MAX_RESOURCE_BYTES = 1023


@dataclasses.dataclass(frozen=True)
class XmppPresence:
    available: bool            # False: type='unavailable'
    show: str = ""             # "", "away", "chat", "dnd", "xa"
    status: str = ""           # <status/> text, may be ""
    priority: int = 0          # XMPP <priority/>, -128..127
    resource: str = ""         # the sending resource (a device)


UNAVAILABLE = XmppPresence(available=False)

# "Most available" first (RFC 8048 6.2, last paragraph: with one resource
# available, one away and one dnd, the user "will simply be available").
# The RFC orders only "available" above the others; between dnd and away
# we rank as common clients do (libpurple's status scores: available 100,
# busy -75, away -100, extended away -200): a busy user is at a device,
# an away one is not.
_AVAILABILITY = {"chat": 4, "": 3, "dnd": 2, "away": 1, "xa": 0}

# RPID activities (RFC 4480 3.2) as XMPP <show/> values; not in the RFC
# (RFC 8048 6.2 note 7 leaves custom extensions to the gateway).  Reading
# each activity's definition: "busy" is what XMPP dnd "merely means" (RFC
# 8048 6.2 note 7); being with people or at the wheel is busy; being
# elsewhere for a while is away; long absences are extended away.
# Activities that say nothing about reachability (working, unknown,
# looking-for-work, other) leave the person available.
ACTIVITY_SHOW = {
    "busy": "dnd", "on-the-phone": "dnd", "appointment": "dnd", "meeting": "dnd",
    "performance": "dnd", "presentation": "dnd", "worship": "dnd", "steering": "dnd",
    "away": "away", "breakfast": "away", "lunch": "away", "dinner": "away", "meal": "away",
    "in-transit": "away", "travel": "away", "shopping": "away", "playing": "away",
    "spectator": "away", "tv": "away",
    "vacation": "xa", "holiday": "xa", "sleeping": "xa", "permanent-absence": "xa",
    "working": "", "looking-for-work": "", "unknown": "", "other": "",
}

# XMPP <show/> as an RPID activity (the reverse of the table above, one
# activity each).  RPID has no "free for chat" and no "extended away":
# chat has no activity, xa is away ("physically away from all interactive
# communication devices", RFC 4480 3.2).  The <show/> element itself
# always travels too, so nothing is lost between gateways.
SHOW_ACTIVITY = {"away": "away", "xa": "away", "dnd": "busy"}

_PERSON_ID = "xmpp-person"
_PLAIN_RESOURCE = re.compile(r"^[A-Za-z0-9._-]*$")
# Characters XML 1.0 cannot carry at all (lxml refuses them).
_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# RFC 3863 4.1.5: "a decimal number between 0 and 1 inclusive with at most
# 3 digits after the decimal point".
_QVALUE = re.compile(r"^(?:0(?:\.(\d{0,3}))?|1(?:\.0{0,3})?)$")


def _q(local: str, ns: str = PIDF_NS) -> str:
    return f"{{{ns}}}{local}"


# -- values in both directions --------------------------------------------

def tuple_id(resource: str) -> str:
    """The tuple 'id' for an XMPP resource.  RFC 8048 6.2 note 2: the id is
    an xs:ID, stricter than a resourcepart (no leading digit), so the
    resourcepart gets the RECOMMENDED "ID-" prefix.  pidf.py accepts ASCII
    NCNames only, and a resourcepart may be any Unicode up to 1023 bytes:
    other or longer resources become a digest under another alphabetic
    prefix ("IDh-"), so two resources never share an id and a resource
    keeps its id across updates."""
    if _PLAIN_RESOURCE.match(resource) and len(resource) <= MAX_PLAIN_RESOURCE:
        return "ID-" + resource
    return "IDh-" + hashlib.sha256(resource.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def pidf_priority(xmpp_priority: int) -> str | None:
    """The PIDF <contact> 'priority' for an XMPP <priority/> (RFC 8048 6.2
    note 6): negative values MUST NOT be mapped (None); 0..127 map onto
    0..1 like the RFC's example (1 -> 0.007, 2 -> 0.015, 126 -> 0.992, that
    is truncated to thousandths), unique per value."""
    if xmpp_priority < 0:
        return None
    milli = min(xmpp_priority, 127) * 1000 // 127
    return f"{milli // 1000}.{milli % 1000:03d}".rstrip("0").rstrip(".")


def xmpp_priority(qvalue: str) -> int | None:
    """The XMPP <priority/> for a PIDF contact priority (RFC 8048 6.3 note
    2 refers to 6.2 note 6): 0..1 onto 0..127, rounding so that
    pidf_priority() comes back unchanged.  An invalid or out-of-range
    value is ignored as if absent (RFC 3863 4.1.5): None."""
    m = _QVALUE.match(qvalue.strip())
    if not m:
        return None
    milli = 1000 if qvalue.strip().startswith("1") else int((m.group(1) or "").ljust(3, "0"))
    return (milli * 127 + 500) // 1000


def received(presence: XmppPresence) -> XmppPresence:
    """A presence as a peer sent it, brought within RFC 6121's bounds
    before it is stored: <show/> one of four or none (4.7.2.1), <priority/>
    clamped to -128..127 (4.7.2.3), <status/> text XML can carry, at most
    MAX_STATUS_CHARS."""
    return dataclasses.replace(presence, show=_clean_show(presence.show),
                               priority=_clean_priority(presence.priority),
                               status=_clean_text(presence.status))


def _clean_show(show) -> str:
    # RFC 6121 4.7.2.1: the value MUST be one of four; anything else is
    # treated as no <show/>, i.e. plainly available.
    return show if show in SHOWS else ""


def _clean_priority(priority) -> int:
    # RFC 6121 4.7.2.3: an integer between -128 and +127.
    try:
        return max(-128, min(127, int(priority)))
    except (TypeError, ValueError):
        return 0


def _clean_text(text, limit: int = MAX_STATUS_CHARS) -> str:
    """Text fit for an XML text node: the characters XML cannot carry
    dropped, bounded in length.  Escaping is lxml's job."""
    if not isinstance(text, str):
        return ""
    return _NOT_XML_CHAR.sub("", text)[:limit].strip()


# -- XMPP to SIP (RFC 8048 6.2, Table 1) ----------------------------------

def pidf_from_xmpp(entity: str, presences: list[XmppPresence]) -> bytes:
    """A PIDF document (RFC 3863, with RPID RFC 4480 and data model RFC 4479
    where the RFC says so) for the XMPP user `entity` (a URI like
    "sip:juliet@xmpp.example.org") from the presence of each of its
    available resources (one tuple per resource; an empty list or all
    unavailable: one closed tuple). Must be accepted by
    pa_handlers.pidf.parse_publication() (the presence agent stores it like
    any published document), so every tuple needs a valid NCName id."""
    if not isinstance(entity, str) or not entity or entity != _clean_text(entity, len(entity)):
        raise ValueError(f"not a presentity URI: {entity!r}")
    latest: dict[str, XmppPresence] = {}
    for presence in presences:
        # The latest presence of a resource replaces the earlier ones, as
        # an XMPP server keeps one presence per resource (RFC 6121 4.4).
        latest.pop(presence.resource, None)
        latest[presence.resource] = presence
    available = [p for p in latest.values() if p.available]
    if not available:
        last = next(reversed(latest.values()), None)
        return _closed_document(entity, last)
    # Most available first: user agents that look at one tuple only see
    # the one RFC 8048 6.2 says a watcher typically shows.  Beyond
    # MAX_RESOURCES the least available resources are left out.
    ranked = sorted(available, key=_rank, reverse=True)[:MAX_RESOURCES]
    return _open_document(entity, ranked)


def _rank(presence: XmppPresence) -> tuple[int, int]:
    return _AVAILABILITY[_clean_show(presence.show)], _clean_priority(presence.priority)


def _open_document(entity: str, ranked: list[XmppPresence]) -> bytes:
    best = ranked[0]
    activity = SHOW_ACTIVITY.get(_clean_show(best.show))
    person_note = _clean_text(best.status)
    with_person = bool(activity or person_note)
    nsmap = {None: PIDF_NS, **({"dm": DM_NS, "rpid": RPID_NS} if with_person else {})}
    root = etree.Element(_q("presence"), nsmap=nsmap, entity=entity)
    for presence in ranked:
        _open_tuple(root, entity, presence)
    if with_person:
        _person(root, activity, person_note)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def _open_tuple(root, entity: str, presence: XmppPresence) -> None:
    """One resource: Table 1 rows "XMPP resource identifier" (tuple id),
    "type" (basic status, note 4: available is open), "<show/>" (note 7:
    the element itself, inside <status>, as in RFC 8048 Example 19),
    "<priority/>" (note 6: the tuple's contact priority) and "<status/>"
    (the tuple's <note>: the status of this resource, RFC 3863 4.1.6)."""
    tup = etree.SubElement(root, _q("tuple"), id=tuple_id(presence.resource))
    status = etree.SubElement(tup, _q("status"))
    etree.SubElement(status, _q("basic")).text = "open"
    show = _clean_show(presence.show)
    if show:
        etree.SubElement(status, _q("show", JABBER_CLIENT_NS),
                         nsmap={None: JABBER_CLIENT_NS}).text = show
    # The priority needs a <contact>; the XMPP user is reached through the
    # gateway at its presentity URI.  A negative priority MUST NOT be
    # mapped (note 6), and a <contact> without one would get the agent's
    # default priority from parse_publication(), above every low positive
    # XMPP priority: such a tuple has no <contact> at all.
    priority = pidf_priority(_clean_priority(presence.priority))
    if priority is not None:
        contact = etree.SubElement(tup, _q("contact"), priority=priority)
        contact.text = entity
    note = _clean_text(presence.status)
    if note:
        etree.SubElement(tup, _q("note")).text = note


def _person(root, activity: str | None, note: str) -> None:
    """The person (RFC 4479) as the most available resource describes it:
    RPID <activities> belong to a person only (RFC 4480 3.1, Table 1), and
    the user's own text is a person note (RFC 4479 7.1)."""
    person = etree.SubElement(root, _q("person", DM_NS), id=_PERSON_ID)
    if activity:
        activities = etree.SubElement(person, _q("activities", RPID_NS))
        etree.SubElement(activities, _q(activity, RPID_NS))
    if note:
        etree.SubElement(person, _q("note", DM_NS)).text = note


def _closed_document(entity: str, last: XmppPresence | None) -> bytes:
    """Nothing available: one closed tuple (Table 1 note 4; note 5 of RFC
    8048 sends nothing more).  It carries the id of the resource that went
    last, as RFC 8048 Example 20 does, and the <status/> an unavailable
    presence may give (RFC 6121 4.7.2.2) as its note."""
    root = etree.Element(_q("presence"), nsmap={None: PIDF_NS}, entity=entity)
    tup = etree.SubElement(root, _q("tuple"),
                           id=tuple_id(last.resource) if last is not None else "ID-closed")
    status = etree.SubElement(tup, _q("status"))
    etree.SubElement(status, _q("basic")).text = "closed"
    note = _clean_text(last.status) if last is not None else ""
    if note:
        etree.SubElement(tup, _q("note")).text = note
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


# -- SIP to XMPP (RFC 8048 6.3, Table 2) ----------------------------------

def xmpp_from_pidf(document: bytes | None) -> XmppPresence:
    """The XMPP presence that represents a SIP presentity's aggregated PIDF
    document (as pa_handlers.pidf.compose() builds it; None or b"" means
    nothing published: unavailable).  Hostile input: anything that is not
    a safe, well-formed PIDF document is unavailable, never an exception.

    Table 2 rows: "basic status" -> available (note 1), "<show/>" -> show
    (note 3; RPID activities and user-input when there is none), "priority
    for tuple" -> priority (the highest of the open tuples), "<note/>" ->
    status.  One stanza stands for the whole presentity, so it shows the
    most available open tuple (RFC 8048 6.2, last paragraph)."""
    if not document:
        return UNAVAILABLE
    if isinstance(document, str):
        document = document.encode("utf-8", "replace")
    try:
        root = xmlsafe.parse(document, MAX_AGGREGATE_BYTES)
    except xmlsafe.UnsafeXml:
        return UNAVAILABLE
    if root.tag != _q("presence"):
        return UNAVAILABLE
    return _presence(root)


def _presence(root) -> XmppPresence:
    tuples = _children(root, _q("tuple"))
    persons = _children(root, _q("person", DM_NS))
    open_tuples = [t for t in tuples if (t.findtext(f"{_q('status')}/{_q('basic')}") or "").strip()
                   == "open"]
    if not open_tuples:
        # Note 1: closed (or no basic status at all) is type='unavailable',
        # which may still carry a <status/> (RFC 6121 4.7.2.2).
        noted = next((t for t in tuples if _note_text(_children(t, _q("note")))), None)
        return XmppPresence(available=False, status=_status_text(root, noted, persons))
    person_show = _person_show(persons)
    idle_devices = _idle_device_ids(root)
    candidates = []
    for index, tup in enumerate(open_tuples):
        show = _tuple_show(tup, person_show, idle_devices)
        priority = _tuple_priority(tup)
        candidates.append(((_AVAILABILITY[show], -1 if priority is None else priority, -index),
                           show, tup))
    _, show, best = max(candidates, key=lambda c: c[0])
    # The stanza stands for every open tuple, so it takes the highest of
    # their priorities; a contact without one has the lowest (RFC 3863
    # 4.1.5), and no priority at all is XMPP's default 0 (RFC 6121 4.7.2.3).
    priorities = [p for p in map(_tuple_priority, open_tuples) if p is not None]
    return XmppPresence(available=True, show=show, status=_status_text(root, best, persons),
                        priority=max(priorities, default=0))


def _children(element, tag: str) -> list:
    return [c for c in element if c.tag == tag]


def _tuple_show(tup, person_show: str | None, idle_devices: set[str]) -> str:
    """The <show/> for one open tuple: the 'jabber:client' <show/> it
    carries (Table 2 note 3), else what RPID says: the person's activities
    and idleness of the tuple, its devices or the person (the least
    available of these), else plainly available."""
    for show in (tup.find(f"{_q('status')}/{_q('show', JABBER_CLIENT_NS)}"),
                 tup.find(_q("show", JABBER_CLIENT_NS))):
        value = (show.text or "").strip() if show is not None else ""
        if value in SHOWS:
            return value
    found = [person_show] if person_show is not None else []
    device_ids = {(d.text or "").strip() for d in _children(tup, _q("deviceID", DM_NS))}
    if _is_idle(tup) or _is_idle(tup.find(_q("status"))) or device_ids & idle_devices:
        found.append("away")
    return min(found, key=_AVAILABILITY.__getitem__, default="")


def _person_show(persons: list) -> str | None:
    """What the person elements say, as one <show/>: every activity of
    every person (an aggregate may hold several, RFC 4479 5) and the
    person's user input (RFC 4480 3.14: it "summarizes any user input
    activity across all services and devices").  A person doing several
    things is as available as the least available of them.  None when
    nothing is said."""
    found = []
    for person in persons:
        for activities in _children(person, _q("activities", RPID_NS)):
            for activity in activities:
                if isinstance(activity.tag, str) and activity.tag.startswith(f"{{{RPID_NS}}}"):
                    show = ACTIVITY_SHOW.get(etree.QName(activity).localname)
                    if show is not None:
                        found.append(show)
        if _is_idle(person):
            # An idle user is XMPP's "auto-away" (RFC 8048 6.2).
            found.append("away")
    return min(found, key=_AVAILABILITY.__getitem__) if found else None


def _is_idle(element) -> bool:
    if element is None:
        return False
    return any((u.text or "").strip() == "idle" for u in _children(element, _q("user-input", RPID_NS)))


def _idle_device_ids(root) -> set[str]:
    """Device IDs of idle devices: RFC 4479 7.1 puts <user-input> on the
    device, and a tuple names its devices with <dm:deviceID>."""
    idle = set()
    for device in _children(root, _q("device", DM_NS)):
        if _is_idle(device):
            idle.update((d.text or "").strip() for d in _children(device, _q("deviceID", DM_NS)))
    idle.discard("")
    return idle


def _tuple_priority(tup) -> int | None:
    contact = tup.find(_q("contact"))
    if contact is None or contact.get("priority") is None:
        return None
    return xmpp_priority(contact.get("priority"))


def _status_text(root, tup, persons: list) -> str:
    """Table 2 maps <note/> to <status/> without saying which note.  The
    most specific one describing the chosen tuple wins: the tuple's own
    notes (RFC 3863 4.1.6: "regarding the particular tuple"; where our own
    XMPP-to-SIP mapping puts <status/>), then the person's notes, which
    are the presence-level notes when the person has none of its own (RFC
    4479 5), then the presence-level notes (RFC 3863 4.1.6: "about the
    PRESENTITY")."""
    scopes = [_children(tup, _q("note"))] if tup is not None else []
    scopes.append([n for p in persons for n in _children(p, _q("note", DM_NS))])
    scopes.append(_children(root, _q("note")))
    for notes in scopes:
        text = _note_text(notes)
        if text:
            return text
    return ""


def _note_text(notes: list) -> str:
    """One note of several languages (RFC 4479 9 allows one per language):
    the one without xml:lang (i-default) if any, else the first.  The
    result has one <status/>, without xml:lang."""
    texts = [(n.get(XML_LANG) is not None, (n.text or "").strip()) for n in notes]
    texts = [t for t in texts if t[1]]
    return min(texts, key=lambda t: t[0])[1] if texts else ""
