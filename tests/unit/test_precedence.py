"""The composition rule (precedence.py): which publications speak in a
presentity's document and in what order, with several devices, some
registered only, some publishing, some both."""

import itertools

from lxml import etree

from pa_handlers import pidf, precedence
from pa_handlers.registration import Binding, binding_tuple, device_keys

NS = {"p": pidf.PIDF_NS}
BOB = "bob@example.com"


def published(source, tuple_id, basic, note=None, priority=None):
    contact = f'<contact priority="{priority}">sip:{tuple_id}@h</contact>' if priority else ""
    note_el = f"<note>{note}</note>" if note else ""
    body = (f'<presence xmlns="{pidf.PIDF_NS}" entity="sip:{BOB}"><tuple id="{tuple_id}">'
            f"<status><basic>{basic}</basic></status>{contact}{note_el}</tuple></presence>")
    return ("publish", source, pidf.parse_publication(body.encode(), 0.5).dumps())


def registered(binding, basic="open", stored=None):
    parts = binding_tuple("reg-" + binding.key, basic, binding.contact, "0.5",
                          device_keys(binding, stored))
    return ("registrar", "binding:" + binding.key, parts.dumps())


def document(rows):
    return pidf.compose(BOB, precedence.arrange(rows))


def first_tuple(rows):
    """What pjsua shows: the first tuple's id, basic status and note."""
    t = etree.fromstring(document(rows)).find("p:tuple", NS)
    return t.get("id"), t.findtext("p:status/p:basic", namespaces=NS), \
        t.findtext("p:note", namespaces=NS)


def ids(rows):
    return [t.get("id") for t in etree.fromstring(document(rows)).findall("p:tuple", NS)]


# Three devices of bob: a desk phone that only registers, a softphone that
# registers and publishes (no Contact in its PUBLISH, like pjsua: known by
# its address), and a tablet that only publishes.
DESK = Binding("sip:bob@10.0.0.1:5060", None, 2**31 - 1, "desk", source="udp:10.0.0.1:5060")
SOFT = Binding("sip:bob@10.0.0.2:5072;ob", None, 2**31 - 1, "soft", source="udp:10.0.0.2:5072")


def test_a_device_that_publishes_speaks_for_itself():
    rows = [registered(SOFT), published("address:udp:10.0.0.2:5072", "soft-pub", "closed",
                                        note="gone home")]
    assert ids(rows) == ["soft-pub"]
    assert first_tuple(rows) == ("soft-pub", "closed", "gone home")


def test_its_registration_comes_back_when_the_publication_ends():
    assert ids([registered(SOFT)]) == ["reg-soft"]


def test_published_state_comes_first_then_registered_devices():
    rows = [registered(DESK), registered(SOFT),
            published("address:udp:10.0.0.2:5072", "soft-pub", "open", note="at work"),
            published("contact:bob@10.0.0.3:5060", "tablet", "open")]
    assert ids(rows) == ["soft-pub", "tablet", "reg-desk"]
    assert first_tuple(rows) == ("soft-pub", "open", "at work")


def test_a_person_who_says_closed_is_shown_closed_before_a_registered_phone():
    rows = [registered(DESK), published("address:udp:10.0.0.2:5072", "soft-pub", "closed",
                                        note="gone home")]
    assert first_tuple(rows) == ("soft-pub", "closed", "gone home")
    assert ids(rows) == ["soft-pub", "reg-desk"]


def test_among_publications_reachable_ones_first():
    rows = [published("contact:bob@10.0.0.3:5060", "tablet", "closed", note="battery low"),
            published("address:udp:10.0.0.2:5072", "soft-pub", "open", note="at work")]
    assert first_tuple(rows) == ("soft-pub", "open", "at work")


def test_among_equals_the_higher_priority_then_the_older_first():
    rows = [published("contact:bob@a", "a", "open", priority="0.3"),
            published("contact:bob@b", "b", "open", priority="0.9"),
            published("contact:bob@c", "c", "open", priority="0.3")]
    assert ids(rows) == ["b", "a", "c"]


def test_a_binding_just_removed_does_not_hide_a_registered_one():
    rows = [registered(SOFT, basic="closed"), registered(DESK)]
    assert first_tuple(rows) == ("reg-desk", "open", None)
    assert ids(rows) == ["reg-desk", "reg-soft"]


def test_the_device_is_matched_by_instance_contact_or_address():
    by_instance = Binding("sip:bob@10.0.0.4:5060", None, 0, "i", instance="<urn:uuid:ab-cd>")
    assert ids([registered(by_instance),
                published(precedence.instance_key("<urn:uuid:ab-cd>"), "x", "open")]) == ["x"]
    by_contact = Binding("sip:bob@10.0.0.5:5070;transport=tcp", None, 0, "c")
    assert ids([registered(by_contact),
                published(precedence.contact_key("sip:bob@10.0.0.5:5070"), "x", "open")]) == ["x"]
    # Another device's publication leaves the binding in place.
    assert ids([registered(by_contact),
                published("contact:bob@10.0.0.5:5071", "x", "open")]) == ["x", "reg-c"]


def test_a_later_register_of_another_device_keeps_the_stored_address():
    """The address a REGISTER came from is known only while it is handled."""
    first = registered(SOFT)
    again = Binding(SOFT.contact, None, 2**31 - 1, "soft")  # re-read for DESK's REGISTER
    assert "address:udp:10.0.0.2:5072" in device_keys(again, first[2])


def test_the_order_they_were_stored_in_does_not_matter():
    """A REGISTER saved after its device's first PUBLISH (baresip publishes
    3 ms after its 200) gives the same document as one saved before."""
    rows = [registered(DESK), registered(SOFT),
            published("address:udp:10.0.0.2:5072", "soft-pub", "closed", note="gone home"),
            published("contact:bob@10.0.0.3:5060", "tablet", "open", note="on the train")]
    documents = {document(list(order)) for order in itertools.permutations(rows)}
    assert len(documents) == 1
    assert ids(rows) == ["tablet", "soft-pub", "reg-desk"]


def test_a_stored_publication_without_devices_reads_as_before():
    old = pidf.Parts.loads(b'[[["t","open","","",""]],[],[]]')
    assert old.devices == [] and pidf.Parts.loads(old.dumps()) == old
