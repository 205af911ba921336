"""XMPP <-> SIP presence mapping (RFC 8048, obsoleting RFC 7248): one test
per row of Table 1 (XMPP to SIP, section 6.2) and Table 2 (SIP to XMPP,
section 6.3), our RPID translation table, round trips through the
presence agent's own parsing and aggregation, and hostile documents."""

import pytest
from lxml import etree

from pa_handlers import pidf
from pa_handlers.xmpp_mapping import (ACTIVITY_SHOW, MAX_RESOURCES, MAX_STATUS_CHARS,
                                      XmppPresence, pidf_from_xmpp, pidf_priority, tuple_id,
                                      xmpp_from_pidf, xmpp_priority)

NS = pidf.PIDF_NS
DM = "urn:ietf:params:xml:ns:pidf:data-model"
RPID = "urn:ietf:params:xml:ns:pidf:rpid"
JC = "jabber:client"
ENTITY = "sip:juliet@xmpp.example.org"
UNAVAILABLE = XmppPresence(available=False)


def P(show="", status="", priority=0, resource="balcony", available=True):
    return XmppPresence(available=available, show=show, status=status, priority=priority,
                        resource=resource)


def tree(presences, entity=ENTITY):
    body = pidf_from_xmpp(entity, presences)
    pidf.parse_publication(body, 0.5)          # the agent must accept every document we make
    return etree.fromstring(body)


def tuples(root):
    return root.findall(f"{{{NS}}}tuple")


def basic(t):
    return t.findtext(f"{{{NS}}}status/{{{NS}}}basic")


def show_of(t):
    return t.findtext(f"{{{NS}}}status/{{{JC}}}show")


def activities(root):
    return [etree.QName(a).localname
            for a in root.iterfind(f"{{{DM}}}person/{{{RPID}}}activities/*")]


def doc(inner: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?><presence xmlns="{NS}" xmlns:dm="{DM}"'
            f' xmlns:rpid="{RPID}" entity="sip:romeo@example.net">{inner}</presence>').encode()


def tup(id="t1", basic="open", inner="", prio=None):
    contact = f'<contact priority="{prio}">sip:romeo@192.0.2.1</contact>' if prio else ""
    return f'<tuple id="{id}"><status><basic>{basic}</basic></status>{contact}{inner}</tuple>'


def xshow(value):
    return f'<show xmlns="{JC}">{value}</show>'


def person(inner):
    return f'<dm:person id="p1">{inner}</dm:person>'


def via_agent(presences, presentity="juliet@xmpp.example.org"):
    """XMPP -> PIDF -> what the agent stores -> its aggregate -> XMPP."""
    parts = pidf.parse_publication(pidf_from_xmpp("sip:" + presentity, presences), 0.5)
    parts = pidf.Parts.loads(parts.dumps())
    return xmpp_from_pidf(pidf.compose(presentity, [parts]))


# -- Table 1: XMPP to SIP ---------------------------------------------------

def test_row_resource_identifier_becomes_tuple_id_with_ID_prefix():
    # RFC 8048 Example 19 and note 2.
    [t] = tuples(tree([P(resource="yn0cl4bnw0yr3vym")]))
    assert t.get("id") == "ID-yn0cl4bnw0yr3vym"
    assert tuple_id("1phone") == "ID-1phone"      # a leading digit is no NCName


@pytest.mark.parametrize("resource", ["laptop 2", "laptop/2", "ноутбук", "a" * 65, "x:y", "",
                                      "\ud800"])
def test_any_resource_gets_a_valid_stable_id(resource):
    [t] = tuples(tree([P(resource=resource)]))
    assert t.get("id") == tuple_id(resource) == tuple_id(str(resource))
    assert pidf._NCNAME.match(t.get("id"))


def test_distinct_resources_get_distinct_ids():
    resources = ["a", "b", "a b", "a/b", "IDh-x", "h" + "0" * 31, "ноутбук", "Ноутбук", ""]
    assert len({tuple_id(r) for r in resources}) == len(resources)


def test_row_from_becomes_the_entity():
    assert tree([P()]).get("entity") == ENTITY


@pytest.mark.parametrize("entity", ["", "sip:a\x00@b", None])
def test_no_document_without_a_presentity(entity):
    with pytest.raises(ValueError):
        pidf_from_xmpp(entity, [P()])


def test_row_type_absent_is_open():
    [t] = tuples(tree([P()]))
    assert basic(t) == "open"


def test_row_type_unavailable_is_one_closed_tuple():
    # Note 4 and note 5 (RFC 8048: nothing more is sent; RFC 7248 also
    # unsubscribed).  The tuple keeps the resource's id as in Example 20.
    [t] = tuples(tree([P(resource="dr4hcr0st3lup4c", available=False, status="Busy IRL")]))
    assert (t.get("id"), basic(t)) == ("ID-dr4hcr0st3lup4c", "closed")
    assert t.findtext(f"{{{NS}}}note") == "Busy IRL"      # <status/> of unavailable presence


def test_no_resource_at_all_is_one_closed_tuple():
    [t] = tuples(tree([]))
    assert basic(t) == "closed"
    [t] = tuples(tree([P(resource="a", available=False), P(resource="b", available=False)]))
    assert (t.get("id"), basic(t)) == ("ID-b", "closed")


@pytest.mark.parametrize("xmpp, q", [(0, "0"), (1, "0.007"), (2, "0.015"), (64, "0.503"),
                                     (126, "0.992"), (127, "1"), (500, "1")])
def test_row_priority_becomes_contact_priority(xmpp, q):
    # Note 6, with the RFC's own examples for 1, 2 and 126.
    [t] = tuples(tree([P(priority=xmpp)]))
    assert t.find(f"{{{NS}}}contact").get("priority") == q
    assert t.findtext(f"{{{NS}}}contact") == ENTITY


@pytest.mark.parametrize("xmpp", [-1, -128, -500])
def test_negative_priority_is_not_mapped(xmpp):
    # Note 6: "MUST NOT map the value".  Not even through the agent, which
    # gives a <contact> without priority its default one.
    [t] = tuples(tree([P(priority=xmpp)]))
    assert t.find(f"{{{NS}}}contact") is None
    assert pidf.parse_publication(pidf_from_xmpp(ENTITY, [P(priority=xmpp)]), 0.5) \
        .tuples[0].priority == ""
    assert via_agent([P("away", priority=xmpp)]) == XmppPresence(True, "away", "", 0)


def test_priority_that_is_no_integer_is_xmpp_default_zero():
    # RFC 6121 4.7.2.3: no (usable) priority is priority 0.
    [t] = tuples(tree([P(priority="junk")]))
    assert t.find(f"{{{NS}}}contact").get("priority") == "0"


def test_every_priority_is_unique_and_comes_back():
    values = [pidf_priority(p) for p in range(128)]
    assert len(set(values)) == 128
    assert [xmpp_priority(q) for q in values] == list(range(128))


@pytest.mark.parametrize("show, activity", [("", None), ("chat", None), ("away", "away"),
                                            ("xa", "away"), ("dnd", "busy")])
def test_row_show_is_carried_as_jabber_show_and_rpid(show, activity):
    # Note 7: the 'jabber:client' <show/> inside the PIDF (RECOMMENDED,
    # placed in <status> as in Example 19), and our RPID translation.
    root = tree([P(show=show)])
    [t] = tuples(root)
    assert show_of(t) == (show or None)
    assert activities(root) == ([activity] if activity else [])


def test_unknown_show_is_plain_available():
    root = tree([P(show="sleepy")])
    assert show_of(tuples(root)[0]) is None and activities(root) == []


def test_row_status_becomes_tuple_note_and_person_note():
    root = tree([P(show="dnd", status="Wooing Juliet")])
    assert tuples(root)[0].findtext(f"{{{NS}}}note") == "Wooing Juliet"
    assert root.findtext(f"{{{DM}}}person/{{{DM}}}note") == "Wooing Juliet"


def test_status_text_is_escaped_and_cleaned():
    nasty = '</note><tuple id="x">&amp; <![CDATA[ "\' \x00\x1b\ufffe ok'
    root = tree([P(status=nasty)])
    assert tuples(root)[0].findtext(f"{{{NS}}}note") == \
        '</note><tuple id="x">&amp; <![CDATA[ "\'  ok'
    assert len(tuples(root)) == 1


def test_long_status_is_bounded():
    note = tuples(tree([P(status="x" * 5000)]))[0].findtext(f"{{{NS}}}note")
    assert note == "x" * MAX_STATUS_CHARS


def test_rows_without_a_value_to_map_are_absent():
    # 'id' (no mapping, note 3), 'to', xml:lang and the stanza itself are
    # the gateway's SIP request, not the document.
    root = tree([P()])
    assert [etree.QName(c).localname for c in root] == ["tuple"]
    assert [etree.QName(c).localname for c in tuples(root)[0]] == ["status", "contact"]


# -- several resources ------------------------------------------------------

def test_one_tuple_per_available_resource_most_available_first():
    # RFC 8048 6.2, last paragraph: away + dnd + available shows available.
    root = tree([P("away", resource="a", priority=5), P("dnd", resource="b"),
                 P("", resource="c", status="here"), P(resource="gone", available=False)])
    assert [(t.get("id"), show_of(t)) for t in tuples(root)] == \
        [("ID-c", None), ("ID-b", "dnd"), ("ID-a", "away")]
    assert activities(root) == []
    assert root.findtext(f"{{{DM}}}person/{{{DM}}}note") == "here"


def test_equal_availability_goes_by_priority():
    root = tree([P("away", resource="low", priority=1), P("away", resource="high", priority=9)])
    assert [t.get("id") for t in tuples(root)] == ["ID-high", "ID-low"]


def test_latest_presence_of_a_resource_wins():
    root = tree([P("dnd", resource="a"), P("away", resource="a"), P(resource="a", available=False)])
    assert basic(tuples(root)[0]) == "closed"
    root = tree([P("dnd", resource="a"), P("away", resource="a")])
    assert [show_of(t) for t in tuples(root)] == ["away"]


def test_resources_are_bounded_and_worst_case_fits_the_agent():
    worst = [P("chat", "&" * 5000, 127, resource=f"\U0001f600{i}") for i in range(MAX_RESOURCES + 5)]
    body = pidf_from_xmpp(ENTITY, worst)
    assert len(body) <= pidf.MAX_DOCUMENT_BYTES
    assert len(pidf.parse_publication(body, 0.5).tuples) == MAX_RESOURCES


# -- Table 2: SIP to XMPP ---------------------------------------------------

def test_row_basic_open_is_available():
    assert xmpp_from_pidf(doc(tup())) == XmppPresence(available=True)


def test_row_basic_closed_is_unavailable():
    # RFC 8048 Example 20 -> Example 21.
    body = (b"<?xml version='1.0' encoding='UTF-8'?>"
            b"<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='pres:romeo@example.net'>"
            b"<tuple id='ID-dr4hcr0st3lup4c'><status><basic>closed</basic></status></tuple>"
            b"</presence>")
    assert xmpp_from_pidf(body) == UNAVAILABLE


def test_no_basic_status_is_not_available():
    assert xmpp_from_pidf(doc('<tuple id="t"><status><rpid:x/></status></tuple>')) == UNAVAILABLE


@pytest.mark.parametrize("document", [None, b""])
def test_nothing_published_is_unavailable(document):
    assert xmpp_from_pidf(document) == UNAVAILABLE


def test_agent_documents_without_publication_are_unavailable():
    assert xmpp_from_pidf(pidf.closed_document("romeo@example.net")) == UNAVAILABLE
    assert xmpp_from_pidf(pidf.compose("romeo@example.net", [])) == UNAVAILABLE


@pytest.mark.parametrize("show", ["away", "chat", "dnd", "xa"])
def test_row_show_is_show(show):
    # Note 3.
    inner = f'<tuple id="t"><status><basic>open</basic>{xshow(show)}</status></tuple>'
    assert xmpp_from_pidf(doc(inner)).show == show


def test_show_outside_status_and_invalid_shows():
    assert xmpp_from_pidf(doc(tup(inner=xshow(" dnd ")))).show == "dnd"
    assert xmpp_from_pidf(doc(tup(inner=xshow("sleepy")))).show == ""
    wrong_ns = '<show xmlns="jabber:server">dnd</show>'
    assert xmpp_from_pidf(doc(tup(inner=wrong_ns))).show == ""


@pytest.mark.parametrize("priorities, expected", [(["0.5"], 64), (["0.5", "1"], 127),
                                                  (["0"], 0), ([None], 0), (["1.5", "0.2"], 25),
                                                  (["-0.1"], 0), (["0.0001"], 0), (["abc"], 0)])
def test_row_priority_is_the_highest_open_tuple_priority(priorities, expected):
    inner = "".join(tup(f"t{i}", prio=p) for i, p in enumerate(priorities))
    assert xmpp_from_pidf(doc(inner)).priority == expected


def test_closed_tuples_priorities_do_not_count():
    inner = tup("a", prio="0.1") + tup("b", "closed", prio="1")
    assert xmpp_from_pidf(doc(inner)).priority == xmpp_priority("0.1") == 13


def test_row_tuple_note_is_status():
    assert xmpp_from_pidf(doc(tup(inner="<note>In a meeting</note>"))).status == "In a meeting"


def test_person_note_then_presentity_note():
    # RFC 4479 section 5: presence-level notes are the notes of a person
    # that has none of its own.
    both = tup() + "<note>presentity</note>" + person("<dm:note>person</dm:note>")
    assert xmpp_from_pidf(doc(both)).status == "person"
    assert xmpp_from_pidf(doc(tup() + "<note>presentity</note>" + person(""))).status == "presentity"
    assert xmpp_from_pidf(doc(tup(inner="<note>tuple</note>") + "<note>presentity</note>"
                              + person("<dm:note>person</dm:note>"))).status == "tuple"


def test_note_without_language_is_preferred():
    notes = '<note xml:lang="fr">Ne pas déranger</note><note>Do not disturb</note>'
    assert xmpp_from_pidf(doc(tup(inner=notes))).status == "Do not disturb"
    only_lang = '<note xml:lang="fr">Ne pas déranger</note><note xml:lang="en">DND</note>'
    assert xmpp_from_pidf(doc(tup(inner=only_lang))).status == "Ne pas déranger"


def test_unavailable_keeps_its_note():
    body = doc(tup(basic="closed", inner="<note>Gone home</note>"))
    assert xmpp_from_pidf(body) == XmppPresence(available=False, status="Gone home")


def test_most_available_open_tuple_is_shown():
    inner = (tup("phone", inner="<note>ringing</note>", prio="1").replace(
                "<basic>open</basic>", f"<basic>open</basic>{xshow('dnd')}")
             + tup("pc", inner="<note>at my desk</note>", prio="0.2")
             + tup("old", "closed", inner="<note>closed one</note>"))
    assert xmpp_from_pidf(doc(inner)) == XmppPresence(True, "", "at my desk", 127)


# -- RPID (RFC 4480) as <show/>: our translation, RFC 8048 6.2 note 7 --------

@pytest.mark.parametrize("activity, show", sorted(ACTIVITY_SHOW.items()))
def test_rpid_activity_row(activity, show):
    body = doc(tup() + person(f"<rpid:activities><rpid:{activity}/></rpid:activities>"))
    assert xmpp_from_pidf(body) == XmppPresence(available=True, show=show)


def test_every_rpid_activity_is_in_the_table():
    assert set(ACTIVITY_SHOW) == {
        "appointment", "away", "breakfast", "busy", "dinner", "holiday", "in-transit",
        "looking-for-work", "lunch", "meal", "meeting", "on-the-phone", "other", "performance",
        "permanent-absence", "playing", "presentation", "shopping", "sleeping", "spectator",
        "steering", "travel", "tv", "unknown", "vacation", "working", "worship"}


@pytest.mark.parametrize("acts, show", [(["travel", "meal"], "away"), (["busy", "away"], "away"),
                                        (["meeting", "vacation"], "xa"), (["working", "busy"], "dnd"),
                                        (["unknown"], "")])
def test_several_activities_give_the_least_available(acts, show):
    body = doc(tup() + person("<rpid:activities>" + "".join(f"<rpid:{a}/>" for a in acts)
                              + "</rpid:activities>"))
    assert xmpp_from_pidf(body).show == show


def test_activities_of_several_persons_are_combined():
    body = doc(tup() + person("<rpid:activities><rpid:meeting/></rpid:activities>")
               + '<dm:person id="p2"><rpid:activities><rpid:lunch/></rpid:activities></dm:person>')
    assert xmpp_from_pidf(body).show == "away"


def test_explicit_show_beats_rpid():
    body = doc(tup(inner=xshow("chat")) + person("<rpid:activities><rpid:busy/></rpid:activities>"))
    assert xmpp_from_pidf(body).show == "chat"


def test_activities_in_other_namespaces_or_places_are_ignored():
    wrong_ns = person('<rpid:activities><x:busy xmlns:x="urn:x"/></rpid:activities>')
    assert xmpp_from_pidf(doc(tup() + wrong_ns)).show == ""
    top_level = '<rpid:activities><rpid:busy/></rpid:activities>'
    assert xmpp_from_pidf(doc(tup() + top_level)).show == ""


@pytest.mark.parametrize("where", ["tuple", "status", "device", "person"])
def test_rpid_idle_user_input_is_away(where):
    idle = "<rpid:user-input>idle</rpid:user-input>"
    inner = {
        "tuple": tup(inner=idle),
        "status": tup().replace("</basic>", "</basic>" + idle),
        "device": tup(inner="<dm:deviceID>urn:device:1</dm:deviceID>")
        + f'<dm:device id="d1">{idle}<dm:deviceID>urn:device:1</dm:deviceID></dm:device>',
        "person": tup() + person(idle),
    }[where]
    assert xmpp_from_pidf(doc(inner)).show == "away"
    assert xmpp_from_pidf(doc(inner.replace(">idle<", ">active<"))).show == ""


def test_idle_device_of_another_tuple_does_not_count():
    inner = (tup(inner="<dm:deviceID>urn:device:2</dm:deviceID>")
             + '<dm:device id="d1"><rpid:user-input>idle</rpid:user-input>'
               '<dm:deviceID>urn:device:1</dm:deviceID></dm:device>')
    assert xmpp_from_pidf(doc(inner)).show == ""


def test_busy_but_idle_person_is_away():
    body = doc(tup() + person("<rpid:activities><rpid:busy/></rpid:activities>"
                              "<rpid:user-input>idle</rpid:user-input>"))
    assert xmpp_from_pidf(body).show == "away"


# -- round trips through the agent ------------------------------------------

@pytest.mark.parametrize("show", ["", "away", "chat", "dnd", "xa"])
@pytest.mark.parametrize("status", ["", "Wooing Juliet", "<&> \"quoted\" ünïcödé ✓"])
def test_round_trip_keeps_show_and_status(show, status):
    back = via_agent([P(show, status, priority=10)])
    assert back == XmppPresence(True, show, status, 10)


def test_round_trip_of_several_resources_shows_the_most_available():
    back = via_agent([P("away", "coffee", 3, "a"), P("dnd", "call", 50, "b"),
                      P("xa", "", 127, "c"), P(available=False, resource="d")])
    assert back == XmppPresence(True, "dnd", "call", 127)


@pytest.mark.parametrize("presences", [[], [P(available=False, status="bye")]])
def test_round_trip_of_unavailable(presences):
    assert not via_agent(presences).available


def test_agent_composition_of_separate_resource_publications():
    # The gateway may publish each resource on its own: the aggregate holds
    # several tuples and persons, and still reads back.
    parts = [pidf.parse_publication(pidf_from_xmpp(ENTITY, [p]), 0.5)
             for p in (P("xa", "later", 0, "a"), P("chat", "talk to me", 0, "b"))]
    body = pidf.compose("juliet@xmpp.example.org", parts)
    assert xmpp_from_pidf(body) == XmppPresence(True, "chat", "talk to me", 0)


def test_registration_tuples_without_show():
    # What pa_handlers.registration stores: open tuples, contact, q-value.
    assert xmpp_from_pidf(doc(tup("r1", prio="0.8") + tup("r2", prio="1"))) == \
        XmppPresence(True, "", "", 127)


# -- hostile documents ---------------------------------------------------------

BOMB = (b'<?xml version="1.0"?><!DOCTYPE presence [<!ENTITY a "aaaaaaaaaa">'
        + b"".join(b'<!ENTITY %s "%s">' % (b"a" * (i + 2), (b"&" + b"a" * (i + 1) + b";") * 10)
                   for i in range(8))
        + f'<presence xmlns="{NS}" entity="x">'.encode()
        + b'<tuple id="t"><status><basic>open</basic></status><note>&aaaaaaaaa;</note></tuple>'
          b'</presence>')
XXE = (b'<?xml version="1.0"?><!DOCTYPE p [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
       + doc(tup(inner="<note>&x;</note>")).split(b"?>", 1)[1])


@pytest.mark.parametrize("body", [
    b"<presence",
    b"not xml at all",
    b"\xff\xfe<\x00p\x00",
    BOMB,
    XXE,
    doc(tup()).replace(NS.encode(), b"urn:ietf:params:xml:ns:cpim-pidf"),
    f'<presence xmlns="{JC}"><show>chat</show></presence>'.encode(),
    doc("<dm:person id='p'>" + "<x xmlns='urn:x'>" * 100 + "</x>" * 100 + "</dm:person>" + tup()),
    doc(tup() * 6000),
    doc(tup(inner="<note>" + "x" * (2 * 1024 * 1024) + "</note>")),
    doc(tup()) + b"<trailing/>",
], ids=["truncated", "text", "not-utf8", "entity-bomb", "external-entity", "other-namespace",
        "xmpp-stanza", "too-deep", "too-many-elements", "too-large", "two-roots"])
def test_hostile_documents_are_unavailable(body):
    assert xmpp_from_pidf(body) == UNAVAILABLE


def test_odd_but_harmless_documents():
    # Elements in the wrong namespace are not PIDF tuples.
    wrong = doc(tup()).replace(b"<tuple ", b'<tuple xmlns="urn:x" ')
    assert xmpp_from_pidf(wrong) == UNAVAILABLE
    # Mixed content in a note: the text before the child only.
    assert xmpp_from_pidf(doc(tup(inner="<note>a<b xmlns='urn:x'>b</b>c</note>"))).status == "a"
    # A str (not bytes) is read as UTF-8.
    assert xmpp_from_pidf(doc(tup()).decode()).available
    # Comments and processing instructions are dropped by the parser.
    assert xmpp_from_pidf(doc(tup(inner="<!--x--><?pi x?><note>n</note>"))).status == "n"
