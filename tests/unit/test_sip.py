import pytest

from pa_handlers.sip import (BadRequest, SipRequest, choose_media_type, parse_cseq,
                             parse_delta_seconds, parse_event, parse_name_addr, parse_request,
                             parse_uri, split_list)

SUBSCRIBE = (
    b"SUBSCRIBE sip:bob@Example.COM SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\n"
    b"f: \"Alice, A.\" <sip:alice@example.com>;tag=abc\r\n"
    b"t: <sip:bob@example.com>\r\n"
    b"i: call-1@10.0.0.1\r\n"
    b"CSeq: 7 SUBSCRIBE\r\n"
    b"o: presence;id=42\r\n"
    b"Accept: application/pidf+xml,\r\n"
    b"  application/xpidf+xml\r\n"
    b"Record-Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n"
    b"Record-Route: <sip:p3.example.com;lr>\r\n"
    b"l: 4\r\n"
    b"\r\n"
    b"bodyEXTRA"
)


def test_request_is_parsed_with_compact_forms_folding_and_lists():
    req = parse_request(SUBSCRIBE)
    assert (req.method, req.uri) == ("SUBSCRIBE", "sip:bob@Example.COM")
    assert req.header("call-id") == "call-1@10.0.0.1"
    assert req.header("event") == "presence;id=42"
    assert req.header_list("accept") == ["application/pidf+xml", "application/xpidf+xml"]
    assert req.header_list("record-route") == [
        "<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>", "<sip:p3.example.com;lr>"]
    # The body stops at Content-Length (extra datagram bytes are dropped).
    assert req.body == b"body"


@pytest.mark.parametrize("raw", [
    b"SUBSCRIBE sip:x SIP/2.0\r\nBroken header\r\n\r\n",
    b"NOT A REQUEST\r\n\r\n",
    b"SUBSCRIBE sip:x SIP/2.0\r\nl: -1\r\n\r\n",
    b"SUBSCRIBE sip:x SIP/2.0\r\nFrom: \xff\xfe\r\n\r\n",
    b"SUBSCRIBE sip:x SIP/2.0\r\n continuation first\r\n\r\n",
    b"SUBSCRIBE sip:x SIP/2.0\r\nSubject: a\x00b\r\n\r\n",
    b"SUBSCRIBE sip:x SIP/2.0\r\nSubject: a\x1bb\r\n\r\n",
])
def test_malformed_requests_are_bad_requests(raw):
    with pytest.raises(BadRequest):
        parse_request(raw)


def test_split_list_respects_quotes_and_angle_brackets():
    assert split_list('"a, b" <sip:x;p=1,2>;q=1, <sip:y>') == ['"a, b" <sip:x;p=1,2>;q=1', "<sip:y>"]


def test_name_addr_forms():
    na = parse_name_addr('"Alice \\"A\\"" <sip:alice@example.com;transport=tcp>;tag=xyz;foo=bar')
    assert na.display == 'Alice \\"A\\"'
    assert na.uri == "sip:alice@example.com;transport=tcp"
    assert na.tag == "xyz"
    assert na.text == '"Alice \\"A\\"" <sip:alice@example.com;transport=tcp>;foo=bar'
    bare = parse_name_addr("sip:bob@example.com;tag=1")
    assert (bare.uri, bare.tag, bare.text) == ("sip:bob@example.com", "1", "sip:bob@example.com")


def test_aor_follows_rfc3261_comparison():
    # Host case-insensitive, user case-sensitive, escapes decoded, port and params ignored.
    assert parse_uri("sip:%61lice@EXAMPLE.com:5070;transport=tcp").aor == "alice@example.com"
    assert parse_uri("sips:Alice@example.com").aor == "Alice@example.com"
    assert parse_uri("pres:bob@example.com").aor == "bob@example.com"
    assert parse_uri("sip:[2001:DB8::1]:5060").host == "[2001:db8::1]"
    with pytest.raises(BadRequest):
        parse_uri("http://example.com")
    with pytest.raises(BadRequest):
        parse_uri("sip:bob@example.com:99999")


def test_event_header():
    ev = parse_event("presence ; id=7;x=y")
    assert (ev.package, ev.id) == ("presence", "7")
    assert parse_event(None) is None
    assert parse_event(";id=1") is None


def test_delta_seconds_are_capped_not_refused():
    assert parse_delta_seconds("99999999999999999999", "Expires") == 2**32 - 1
    with pytest.raises(BadRequest):
        parse_delta_seconds("-5", "Expires")
    with pytest.raises(BadRequest):
        parse_delta_seconds("soon", "Expires")


def test_cseq_bounds():
    assert parse_cseq("2147483647 SUBSCRIBE") == (2**31 - 1, "SUBSCRIBE")
    for bad in ("2147483648 SUBSCRIBE", "-1 SUBSCRIBE", "x SUBSCRIBE", None):
        with pytest.raises(BadRequest):
            parse_cseq(bad)


def _with_accept(*values):
    headers = {"accept": list(values)} if values else {}
    return SipRequest("SUBSCRIBE", "sip:x@y", headers)


OFFERED = ("application/pidf+xml", "application/xpidf+xml")


@pytest.mark.parametrize("accept, chosen", [
    ((), "application/pidf+xml"),
    (("application/xpidf+xml",), "application/xpidf+xml"),
    (("application/xpidf+xml, application/pidf+xml",), "application/pidf+xml"),
    (("application/*",), "application/pidf+xml"),
    (("*/*",), "application/pidf+xml"),
    (("application/pidf+xml;q=0, */*",), "application/xpidf+xml"),
    (("text/plain",), None),
    (("",), None),
])
def test_media_type_negotiation_uses_server_order(accept, chosen):
    assert choose_media_type(_with_accept(*accept), OFFERED) == chosen
