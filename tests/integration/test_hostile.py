"""Hostile input over UDP and TCP: each item gets a correct 4xx (or a
plausible answer) or is dropped, Kamailio stays alive, and nothing is
half-written."""

import socket

import pytest

from sipua import rand

DB_CHECK = ("SELECT COUNT(*) FROM pa_subscription WHERE presentity LIKE 'hostile%%'"
            " AND (local_tag = '' OR remote_tag = '' OR remote_target = '' OR local_uri = '')")

BOMB = (b'<?xml version="1.0"?><!DOCTYPE p [<!ENTITY a "aaaaaaaaaa">'
        + b"".join(b'<!ENTITY a%d "%s">' % (i, (b"&a%d;" % (i - 1) if i else b"&a;") * 10)
                   for i in range(8))
        + b']><presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:x@y"><note>&a7;</note>'
          b'</presence>')
XXE = (b'<?xml version="1.0"?><!DOCTYPE p [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
       b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:x@y"><note>&x;</note>'
       b'</presence>')


def request(method, transport, port, *, headers=None, body=b"", ruri=None, drop=(),
            content_length=None, cut=None):
    """A request from 127.0.0.1, its headers changeable item by item."""
    user = "hostile" + rand(6)
    fields = {
        "Via": f"SIP/2.0/{transport.upper()} 127.0.0.1:{port};branch=z9hG4bK{rand()};rport",
        "Max-Forwards": "70",
        "From": f"<sip:alice@127.0.0.1>;tag={rand()}",
        "To": f"<sip:{user}@127.0.0.1>",
        "Call-ID": rand(16),
        "CSeq": f"1 {method}",
        "Contact": f"<sip:alice@127.0.0.1:{port}>",
        "Event": "presence",
    }
    if method == "PUBLISH" and body:
        fields["Content-Type"] = "application/pidf+xml"
    for name in drop:
        fields.pop(name, None)
    fields.update(headers or {})
    head = f"{method} {ruri or f'sip:{user}@127.0.0.1'} SIP/2.0\r\n"
    raw = head.encode() + b"".join(
        (f"{k}: ".encode() + (v if isinstance(v, bytes) else v.encode()) + b"\r\n")
        for k, v in fields.items())
    length = len(body) if content_length is None else content_length
    raw += f"Content-Length: {length}\r\n\r\n".encode() + body
    return raw[:cut] if cut else raw


# name, builder(transport, port) -> bytes, acceptable answers (None: dropped)
CORPUS = [
    ("junk", lambda t, p: b"\x00\x01\x02 hello \xff\xfe\r\n\r\n", {None, 400}),
    ("binary noise", lambda t, p: bytes(range(256)) * 8, {None, 400}),
    ("truncated headers", lambda t, p: request("SUBSCRIBE", t, p, cut=120), {None, 400}),
    ("no Via", lambda t, p: request("SUBSCRIBE", t, p, drop=("Via",)), {None, 400}),
    ("oversized header", lambda t, p: request("SUBSCRIBE", t, p,
                                              headers={"Subject": "x" * 12000}),
     {None, 200, 400, 413, 513}),
    ("Content-Length too large", lambda t, p: request(
        "PUBLISH", t, p, body=b"<presence/>", content_length=5000), {None, 400}),
    ("Content-Length too small", lambda t, p: request(
        "PUBLISH", t, p, body=b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:a@b">'
                              b"</presence>", content_length=20), {400}),
    ("negative Content-Length", lambda t, p: request("SUBSCRIBE", t, p, content_length=-5),
     {None, 400}),
    ("not UTF-8", lambda t, p: request("SUBSCRIBE", t, p, headers={"Subject": b"caf\xe9\xff"}),
     {None, 400}),
    ("NUL in a header", lambda t, p: request("SUBSCRIBE", t, p, headers={"Subject": b"a\x00b"}),
     {None, 400}),
    ("huge Expires", lambda t, p: request("SUBSCRIBE", t, p,
                                          headers={"Expires": "9" * 40}), {200, 400}),
    ("negative Expires", lambda t, p: request("SUBSCRIBE", t, p, headers={"Expires": "-1"}),
     {None, 400}),
    ("negative CSeq", lambda t, p: request("SUBSCRIBE", t, p, headers={"CSeq": "-1 SUBSCRIBE"}),
     {None, 400}),
    ("huge CSeq", lambda t, p: request("SUBSCRIBE", t, p,
                                       headers={"CSeq": "99999999999999 SUBSCRIBE"}),
     {None, 400}),
    ("long Call-ID", lambda t, p: request("SUBSCRIBE", t, p, headers={"Call-ID": "c" * 600}),
     {None, 400}),
    ("long tag", lambda t, p: request("SUBSCRIBE", t, p,
                                      headers={"From": f"<sip:a@b>;tag={'t' * 300}"}),
     {None, 400}),
    ("long Event id", lambda t, p: request("SUBSCRIBE", t, p,
                                           headers={"Event": "presence;id=" + "i" * 500}),
     {400}),
    ("unterminated display name", lambda t, p: request(
        "SUBSCRIBE", t, p, headers={"From": '"Alice <sip:a@b>;tag=1'}), {None, 400}),
    ("long Contact", lambda t, p: request(
        "SUBSCRIBE", t, p, headers={"Contact": f"<sip:{'a' * 3000}@127.0.0.1>"}), {None, 400}),
    ("long Request-URI", lambda t, p: request(
        "SUBSCRIBE", t, p, ruri=f"sip:{'u' * 3000}@127.0.0.1"), {None, 400, 414}),
    ("many Record-Routes", lambda t, p: request(
        "SUBSCRIBE", t, p, headers={"Record-Route": ", ".join(
            [f"<sip:proxy{i}.example.com;lr>" for i in range(300)])}), {None, 400}),
    ("long SIP-If-Match", lambda t, p: request(
        "PUBLISH", t, p, headers={"SIP-If-Match": "e" * 2000, "Expires": "60"}), {412}),
    ("entity expansion", lambda t, p: request("PUBLISH", t, p, body=BOMB), {400}),
    ("external entity", lambda t, p: request("PUBLISH", t, p, body=XXE), {400}),
]


def send(kamailio, transport: str, data: bytes, wait: float = 0.8) -> int | None:
    """Send raw bytes; the status of the answer, or None."""
    if transport == "udp":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
    else:
        s = socket.create_connection(kamailio.address, timeout=2)
    s.settimeout(wait)
    try:
        if transport == "udp":
            s.sendto(data, kamailio.address)
        else:
            s.sendall(data)
        try:
            answer = s.recv(65535)
        except (socket.timeout, ConnectionError):
            return None
        if not answer.startswith(b"SIP/2.0 "):
            return None
        return int(answer.split(b" ")[1])
    finally:
        s.close()


@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize("name, build, acceptable", CORPUS, ids=[c[0] for c in CORPUS])
def test_hostile_input(kamailio, database, transport, name, build, acceptable):
    status = send(kamailio, transport, build(transport, 5999))
    assert status in acceptable, f"{name} over {transport}: {status}"
    assert kamailio.alive(), f"Kamailio stopped answering after {name} over {transport}"
    assert database.query(DB_CHECK) == [(0,)]


def test_nothing_escaped_into_the_log(kamailio):
    log = kamailio.log()
    assert "Traceback" not in log
    assert "root:" not in log
