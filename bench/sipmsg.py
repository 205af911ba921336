"""Just enough SIP over UDP for the benchmark's own clients (seeding and
the fan-out watchers): build requests, parse what comes back, answer
NOTIFYs.  sipp drives the rate benchmarks; this is for what sipp cannot
express (one socket acting as a thousand watchers)."""

from __future__ import annotations

import random
import socket

_COMPACT = {"i": "call-id", "f": "from", "t": "to", "v": "via", "l": "content-length",
            "m": "contact", "c": "content-type", "o": "event"}


class Message:
    def __init__(self, data: bytes):
        head, _, self.body = data.partition(b"\r\n\r\n")
        lines = head.decode("utf-8", "replace").split("\r\n")
        self.first_line = lines[0]
        self.headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            if line[:1] in (" ", "\t") and self.headers:  # folded line
                name, value = self.headers[-1]
                self.headers[-1] = (name, value + " " + line.strip())
                continue
            name, _, value = line.partition(":")
            name = name.strip().lower()
            self.headers.append((_COMPACT.get(name, name), value.strip()))

    @property
    def is_response(self) -> bool:
        return self.first_line.startswith("SIP/2.0 ")

    @property
    def status(self) -> int:
        return int(self.first_line.split()[1]) if self.is_response else 0

    @property
    def method(self) -> str:
        if self.is_response:
            return self.cseq_method
        return self.first_line.split()[0]

    @property
    def cseq_method(self) -> str:
        return self.header("cseq").split()[-1]

    def header(self, name: str, default: str = "") -> str:
        name = name.lower()
        for n, v in self.headers:
            if n == name:
                return v
        return default

    def all(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n == name.lower()]

    @property
    def call_id(self) -> str:
        return self.header("call-id")

    def tag(self, header: str) -> str:
        for param in self.header(header).split(";")[1:]:
            key, _, value = param.strip().partition("=")
            if key.lower() == "tag":
                return value
        return ""


def response(request: Message, code: int = 200, reason: str = "OK") -> bytes:
    """A reply echoing the request's Via, From, To, Call-ID and CSeq."""
    lines = [f"SIP/2.0 {code} {reason}"]
    for name in ("via", "from", "to", "call-id", "cseq"):
        lines += [f"{name.title() if name != 'call-id' else 'Call-ID'}: {v}" for v in request.all(name)]
    lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def request(method: str, uri: str, local: tuple[str, int], call_id: str, from_uri: str,
            from_tag: str, to_uri: str, cseq: int, headers: list[str] = (), body: bytes = b"",
            to_tag: str = "") -> bytes:
    branch = "z9hG4bK" + "%x" % random.getrandbits(64)
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: SIP/2.0/UDP {local[0]}:{local[1]};branch={branch}",
        "Max-Forwards: 70",
        f"From: <{from_uri}>;tag={from_tag}",
        f"To: <{to_uri}>" + (f";tag={to_tag}" if to_tag else ""),
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {method}",
        *headers,
        f"Content-Length: {len(body)}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def pidf(entity: str, note: str, basic: str = "open") -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="{entity}">\n'
            f'<tuple id="t1"><status><basic>{basic}</basic></status><note>{note}</note></tuple>\n'
            f'</presence>\n').encode()


def dialog_info(entity: str, dialog_id: str, state: str = "confirmed") -> bytes:
    """What a proxy running pua_dialoginfo publishes for one call."""
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="0"'
            f' state="full" entity="{entity}">\n'
            f'<dialog id="{dialog_id}" direction="recipient"><state>{state}</state></dialog>\n'
            f'</dialog-info>\n').encode()


def publish(uri: str, local: tuple[str, int], call_id: str, cseq: int, body: bytes | None,
            etag: str | None = None, expires: int = 3600, event: str = "presence",
            content_type: str = "application/pidf+xml") -> bytes:
    headers = [f"Event: {event}", f"Expires: {expires}"]
    if etag:
        headers.append(f"SIP-If-Match: {etag}")
    if body:
        headers.append(f"Content-Type: {content_type}")
    return request("PUBLISH", uri, local, call_id, uri, "pub", uri, cseq, headers, body or b"")


def udp_socket(rcvbuf: int = 4 << 20) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    # Bursts of a thousand NOTIFYs must not overflow the socket: ask for a
    # large buffer (the kernel caps it at net.core.rmem_max).
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.bind(("127.0.0.1", 0))
    return s
