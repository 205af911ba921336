"""Which NOTIFY targets are addresses of the registrar (a public GRUU, an
AOR) and which registered device a NOTIFY to them goes to."""

from pa_handlers.registration import Binding, choose_binding, registrar_target


def test_a_public_gruu_names_its_aor_and_instance():
    assert registrar_target("sip:blin@example.org;gr=urn:uuid:2917c8b7") == \
        ("sip:blin@example.org", "urn:uuid:2917c8b7")


def test_an_aor_is_a_host_name_without_port_or_parameters():
    assert registrar_target("sip:blin@example.org") == ("sip:blin@example.org", "")


def test_device_addresses_cost_no_lookup():
    for uri in ("sip:blin@127.0.0.1:5070", "sip:blin@127.0.0.1", "sip:blin@[::1]",
                "sip:blin@pc.example.org:5060", "sip:blin@example.org;transport=tcp",
                "sip:example.org", "sip:uloc-6b0be257-610e-1-64437134@example.org;gr",
                "not a uri"):
        assert registrar_target(uri) is None, uri


PHONE = Binding("sip:blin@10.0.0.1:5060", 0.5, 0, "a", instance="<urn:uuid:AAAA>")
TABLET = Binding("sip:blin@10.0.0.2:5060", 0.9, 0, "b", instance="<urn:uuid:bbbb>",
                 received="sip:192.0.2.7:40000")


def test_a_gruu_goes_to_the_binding_of_its_instance():
    assert choose_binding([TABLET, PHONE], "urn:uuid:aaaa") is PHONE
    assert choose_binding([TABLET, PHONE], "urn:uuid:cccc") is None


def test_an_aor_goes_to_the_highest_q_value():
    assert choose_binding([PHONE, TABLET], "") is TABLET
    assert choose_binding([], "") is None
