"""The SIP grammar at the edges an open network probes (RFC 3261 25.1):
URIs, header parameters, delta-seconds, lengths, control characters."""

import pytest

from pa_handlers.rfc6665 import check_event_id, route_set_of
from pa_handlers.sip import (BadRequest, parse_cseq, parse_delta_seconds, parse_name_addr,
                             parse_request, parse_uri, printable)

UNRESERVED = "abcXYZ019-_.!~*'()"
USER_UNRESERVED = "&=+$,;?/"


def request(*headers: bytes, body: bytes = b"") -> bytes:
    return (b"SUBSCRIBE sip:bob@example.org SIP/2.0\r\n" + b"".join(h + b"\r\n" for h in headers)
            + b"\r\n" + body)


# -- URIs ---------------------------------------------------------------------

@pytest.mark.parametrize("char", UNRESERVED + USER_UNRESERVED)
def test_every_legal_user_character_stays_in_the_user(char):
    uri = parse_uri(f"sip:a{char}b@Example.org;transport=tcp?subject=x")
    assert (uri.user, uri.host, uri.params) == (f"a{char}b", "example.org", {"transport": "tcp"})


def test_user_with_parameters_and_escapes_is_one_user():
    assert parse_uri("sip:o'neil%22;--ab@example.org").aor == "o'neil\";--ab@example.org"
    uri = parse_uri(f"sips:{UNRESERVED}{USER_UNRESERVED}%25%40%C3%A9:pw&=+$,@host:5061;lr")
    assert uri.user == f"{UNRESERVED}{USER_UNRESERVED}%@\u00e9"
    assert (uri.host, uri.port, uri.params) == ("host", 5061, {"lr": ""})


@pytest.mark.parametrize("text", [
    "sip:x@host", "sip:host", "sip:host:5060;lr", "sip:[2001:db8::1]:5060;maddr=[::1]",
    "sip:x@host.;a=b;c?h=v&i=", "pres:bob@example.org", "sip:+1-(555)@example.org;user=phone",
])
def test_legal_uris(text):
    parse_uri(text)


@pytest.mark.parametrize("text", [
    "sip:al ice@example.org", "sip:bob@@example.org", "sip:<bob>@example.org",
    "sip:a@b@c", "sip:@example.org", "sip:a%zz@b", "sip:a%ff@b", "sip:a\"b@c",
    "sip:a@exa mple.org", "sip:a@-host", "sip:a@host-", "sip:a@ho..st", "sip:a@[::g]",
    "sip:a@[::1", "sip:a@host:", "sip:a@host:99999", "sip:a@host:" + "5" * 5000,
    "sip:a@host;a b", "sip:a@host;=x", "sip:a@host?h", "sip:a@host?h=v&", "sip:a@host>",
    "http://example.org", "sip:" + "a" * 2000 + "@host",
])
def test_illegal_uris(text):
    with pytest.raises(BadRequest):
        parse_uri(text)


@pytest.mark.parametrize("escape", ["%00", "%01", "%0d%0a", "%09", "%7f", "%c2%85"])
def test_escaped_control_characters_are_refused(escape):
    with pytest.raises(BadRequest, match="Control Character"):
        parse_uri(f"sip:bob{escape}@example.org")


# -- header values -------------------------------------------------------------

@pytest.mark.parametrize("value", [
    '<sip:a@b>;x y', '<sip:a@b>;=1', '<sip:a@b>;x="unterminated', '<sip:a@b>>',
    '<sip:a@b;x=<y>>', '"A" <sip:a@b> junk', 'A "B" <sip:a@b>',
])
def test_header_parameters_follow_the_grammar(value):
    with pytest.raises(BadRequest):
        parse_name_addr(value)


def test_legal_header_parameters():
    na = parse_name_addr('"A" <sip:a@b>;+sip.instance="<urn:uuid:1;2>" ; expires = 60;lr;'
                         'maddr=[::1];tag=x.y-z')
    assert na.tag == "x.y-z"
    assert na.params["expires"] == "60"


def test_bare_cr_in_a_header_is_refused():
    with pytest.raises(BadRequest, match="Bare CR"):
        parse_request(request(b"Record-Route: <sip:p.example.org;lr>\rX-Injected: 1"))
    with pytest.raises(BadRequest, match="Bare CR"):
        parse_request(request(b"Contact: <sip:a@b>\r"))
    # CRLF and bare LF line ends stay fine.
    assert parse_request(b"SUBSCRIBE sip:b@c SIP/2.0\nCall-ID: 1\n\n").header("call-id") == "1"


@pytest.mark.parametrize("check, value", [
    (check_event_id, "a!!b"), (check_event_id, "a!"),
    (lambda v: route_set_of([v]), "<sip:p!!x.example.org;lr>"),
    (lambda v: route_set_of([v]), "<sip:p.example.org;lr>;x=!!"),
    (lambda v: route_set_of([v]), "<sip:p.example.org;lr>;x y"),
])
def test_what_kamailio_would_rewrite_in_our_notifies_is_refused(check, value):
    with pytest.raises(BadRequest):
        check(value)


# -- numbers ---------------------------------------------------------------------

@pytest.mark.parametrize("value, seconds", [
    ("000000000003600", 3600), ("0", 0), ("0000000000", 0), ("4294967295", 2**32 - 1),
    ("4294967296", 2**32 - 1), ("9" * 40, 2**32 - 1), ("0" * 5000 + "60", 60),
    ("1" * 5000, 2**32 - 1),
])
def test_delta_seconds(value, seconds):
    assert parse_delta_seconds(value, "Expires") == seconds


@pytest.mark.parametrize("value", ["-1", "1.5", "", "0x10", "\u0661"])
def test_bad_delta_seconds(value):
    with pytest.raises(BadRequest):
        parse_delta_seconds(value, "Expires")


def test_content_length_with_many_digits():
    body = b"<presence/>"
    req = parse_request(request(b"Content-Length: " + b"0" * 5000 + b"11", body=body + b"junk"))
    assert req.body == body
    with pytest.raises(BadRequest, match="Bad Content-Length"):
        parse_request(request(b"Content-Length: " + b"1" * 5000))


def test_cseq_with_leading_zeros():
    assert parse_cseq("00000000000007 SUBSCRIBE") == (7, "SUBSCRIBE")
    with pytest.raises(BadRequest):
        parse_cseq("1" * 5000 + " SUBSCRIBE")


def test_printable_escapes_control_characters():
    assert printable("bob\x00\r\n\x1b[31m\x85@example.org") == \
        "bob\\x00\\x0d\\x0a\\x1b[31m\\x85@example.org"
    assert printable("caf\u00e9") == "caf\u00e9"
