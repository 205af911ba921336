import pytest
from lxml import etree

from pa_handlers import pidf
from pa_handlers.pidf import InvalidDocument, Parts, compose, parse_publication, render

NS = pidf.PIDF_NS
DM = "urn:ietf:params:xml:ns:pidf:data-model"
RPID = "urn:ietf:params:xml:ns:pidf:rpid"


def doc(inner: str, extra_ns: str = "") -> bytes:
    return (f'<?xml version="1.0"?><presence xmlns="{NS}" xmlns:dm="{DM}" xmlns:rpid="{RPID}"'
            f' {extra_ns} entity="sip:bob@example.com">{inner}</presence>').encode()


TUPLE = '<tuple id="{id}"><status><basic>{basic}</basic></status><contact{prio}>{contact}</contact></tuple>'


def tup(id="t1", basic="open", contact="sip:bob@10.0.0.1", prio=""):
    return TUPLE.format(id=id, basic=basic, contact=contact, prio=f' priority="{prio}"' if prio else "")


def test_parts_survive_storage():
    parts = parse_publication(doc(tup() + "<note>hi</note>"), 0.5)
    assert Parts.loads(parts.dumps()) == parts


def test_default_priority_is_added_only_where_missing():
    parts = parse_publication(doc(tup("a") + tup("b", prio="0.9")), 0.5)
    assert [(t.id, t.priority) for t in parts.tuples] == [("a", "0.5"), ("b", "0.9")]
    assert 'priority="0.5"' in parts.tuples[0].xml
    assert parse_publication(doc(tup()), 1.0).tuples[0].priority == "1"
    assert parse_publication(doc(tup()), 0.0).tuples[0].priority == "0"


def _ids_and_basics(body: bytes):
    root = etree.fromstring(body)
    return [(t.get("id"), t.findtext(f"{{{NS}}}status/{{{NS}}}basic"))
            for t in root.findall(f"{{{NS}}}tuple")]


def test_aggregate_is_the_union_with_unique_ids_and_kept_namespaces():
    person = '<dm:person id="p1"><rpid:activities><rpid:on-the-phone/></rpid:activities></dm:person>'
    device = '<dm:device id="d1"><dm:deviceID>urn:x:1</dm:deviceID></dm:device>'
    phone = parse_publication(doc(tup("t1", "open") + "<note>phone</note>" + person), 0.5)
    laptop = parse_publication(doc(tup("t1", "closed") + "<note>phone</note>" + device), 0.5)
    body = compose("bob@example.com", [phone, laptop])
    root = etree.fromstring(body)
    assert root.get("entity") == "sip:bob@example.com"
    assert _ids_and_basics(body) == [("t1", "open"), ("t1-2", "closed")]
    assert [n.text for n in root.findall(f"{{{NS}}}note")] == ["phone"]
    assert root.find(f"{{{DM}}}person/{{{RPID}}}activities/{{{RPID}}}on-the-phone") is not None
    assert root.find(f"{{{DM}}}device").get("id") == "d1"
    # PIDF order: tuples, then notes, then extensions.
    assert [etree.QName(c).localname for c in root] == ["tuple", "tuple", "note", "person", "device"]


def test_colliding_extension_ids_are_renamed():
    person = '<dm:person id="p"><dm:note>{}</dm:note></dm:person>'
    a = parse_publication(doc(tup("a") + person.format("one")), 0.5)
    b = parse_publication(doc(tup("b") + person.format("two")), 0.5)
    root = etree.fromstring(compose("bob@example.com", [a, b]))
    assert [p.get("id") for p in root.findall(f"{{{DM}}}person")] == ["p", "p-2"]


def test_nothing_published_is_one_closed_tuple():
    assert compose("bob@example.com", []) == b""
    assert _ids_and_basics(render(b"", "bob@example.com", pidf.PIDF).encode()) == \
        [("pa-closed", "closed")]
    only_person = parse_publication(doc('<dm:person id="p"/>'), 0.5)
    assert _ids_and_basics(compose("bob@example.com", [only_person])) == [("pa-closed", "closed")]


@pytest.mark.parametrize("body, reason", [
    (b"<presence", "Not Well-Formed"),
    (b"<foo xmlns='urn:x'/>", "Not A PIDF"),
    (f"<presence xmlns='{NS}'/>".encode(), "Without Entity"),
    (doc('<tuple><status><basic>open</basic></status></tuple>'), "Tuple Without Valid id"),
    (doc('<tuple id="9x"/>'), "Tuple Without Valid id"),
    (doc(tup(basic="maybe")), "Bad Basic Status"),
    (b"\xff\xfe<\x00p\x00", "Not UTF-8"),
])
def test_invalid_documents(body, reason):
    with pytest.raises(InvalidDocument, match=reason):
        parse_publication(body, 0.5)


BOMB = (b'<?xml version="1.0"?><!DOCTYPE presence [<!ENTITY a "aaaaaaaaaa">'
        + b"".join(b'<!ENTITY %s "%s">' % (b"a" * (i + 2), (b"&" + b"a" * (i + 1) + b";") * 10)
                   for i in range(8))
        + b']><presence xmlns="urn:ietf:params:xml:ns:pidf" entity="x"><note>&aaaaaaaaa;</note></presence>')
XXE = (b'<?xml version="1.0"?><!DOCTYPE p [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
       b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="x"><note>&x;</note></presence>')


@pytest.mark.parametrize("body", [BOMB, XXE], ids=["entity-expansion", "external-entity"])
def test_dtds_and_entities_are_refused(body):
    with pytest.raises(InvalidDocument, match="DTD Not Allowed"):
        parse_publication(body, 0.5)


def test_deep_and_large_documents_are_refused():
    deep = doc("<dm:person id='p'>" + "<x xmlns='urn:x'>" * 10000 + "</x>" * 10000 + "</dm:person>")
    with pytest.raises(InvalidDocument):
        parse_publication(deep, 0.5)
    moderately_deep = doc("<dm:person id='p'>" + "<x xmlns='urn:x'>" * 40 + "</x>" * 40 + "</dm:person>")
    with pytest.raises(InvalidDocument, match="Too Deep"):
        parse_publication(moderately_deep, 0.5)
    big = doc(tup() + "<note>" + "x" * (1024 * 1024) + "</note>")
    with pytest.raises(InvalidDocument) as e:
        parse_publication(big, 0.5)
    assert e.value.code == 413


def test_formats_are_rendered_from_the_same_aggregate():
    parts = parse_publication(doc(tup("t1", "open", "sip:bob@10.0.0.1", "0.8")
                                  + tup("t2", "closed", "sip:bob@10.0.0.2")), 0.5)
    body = compose("bob@example.com", [parts])
    assert render(body, "bob@example.com", pidf.CPIM_PIDF) == body.decode()
    xp = etree.fromstring(render(body, "bob@example.com", pidf.XPIDF).encode(),
                          etree.XMLParser(load_dtd=False, no_network=True, resolve_entities=False))
    assert xp.find("presentity").get("uri") == "sip:bob@example.com;method=SUBSCRIBE"
    atoms = [(a.get("id"), a.find("address").get("priority"), a.find("address/status").get("status"))
             for a in xp.findall("atom")]
    assert atoms == [("t1", "0.8", "open"), ("t2", "0.5", "closed")]
    lp = render(body, "bob@example.com", pidf.LPIDF)
    assert lp.split("\r\n") == ["To: <sip:bob@example.com>", "Contact: <sip:bob@10.0.0.1>;q=1",
                                "Contact: <sip:bob@10.0.0.2>;q=0", ""]
    assert pidf.sent_as("application/lpidf+xml") == pidf.LPIDF


def test_colliding_ids_stay_unique_when_published_ids_look_like_renamed_ones():
    parts = [parse_publication(doc(tup(i)), 0.5) for i in ("a", "a", "a-2", "a", "a-2")]
    ids = [i for i, _ in _ids_and_basics(compose("bob@example.com", parts))]
    assert ids == ["a", "a-2", "a-2-2", "a-3", "a-2-3"]


def test_thousands_of_duplicate_ids_are_numbered_in_order():
    # 4280 copies of one id: what a 64 kB hostile PUBLISH carries.  The
    # time it takes is measured by bench/compose.py, not here.
    many = Parts([pidf.Tuple("a", "", "", "", '<tuple id="a"/>')] * 4280, [], [])
    ids = [i for i, _ in _ids_and_basics(compose("bob@example.com", [many, many]))]
    assert ids == ["a"] + [f"a-{n}" for n in range(2, 8561)]


def test_repeated_notes_and_extensions_appear_once_in_first_order():
    a = parse_publication(doc("<note>x</note><note>y</note>" + '<dm:device id="d"/>'), 0.5)
    b = parse_publication(doc("<note>y</note><note>z</note>" + '<dm:device id="d"/>'), 0.5)
    root = etree.fromstring(compose("bob@example.com", [a, b, a]))
    assert [n.text for n in root.findall(f"{{{NS}}}note")] == ["x", "y", "z"]
    assert [d.get("id") for d in root.findall(f"{{{DM}}}device")] == ["d"]


def test_elements_per_publication_are_limited_at_the_limit():
    at_limit = doc(tup("a") + "<note>n</note>" + '<dm:person id="p"/>')
    assert len(parse_publication(at_limit, 0.5, max_elements=3).tuples) == 1
    with pytest.raises(InvalidDocument, match="Too Many Elements") as e:
        parse_publication(doc(tup("a") + "<note>n</note>" + '<dm:person id="p"/>' + tup("b")),
                          0.5, max_elements=3)
    assert e.value.code == 413


def test_compose_within_leaves_out_the_last_publications_that_do_not_fit():
    pubs = [parse_publication(doc(tup(f"t{i}") + f"<note>{'x' * 100}{i}</note>"), 0.5)
            for i in range(6)]
    whole = compose("bob@example.com", pubs)
    assert pidf.compose_within("bob@example.com", pubs, len(whole)) == (whole, 0)
    three = compose("bob@example.com", pubs[:3])
    for limit in (len(three), len(compose("bob@example.com", pubs[:4])) - 1):
        document, left_out = pidf.compose_within("bob@example.com", pubs, limit)
        assert (document, left_out) == (three, 3)
    assert pidf.compose_within("bob@example.com", pubs, 10) == (b"", 6)
