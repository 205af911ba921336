"""SIP messages as plain values: parsing of requests and of the header
fields the presence agent reads (RFC 3261 section 7 and 25).

Kamailio hands us the raw request; we parse only the header section, once,
and keep the body as bytes.  Anything malformed raises BadRequest, which
becomes a 400 reply, never an exception escaping into Kamailio.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import urllib.parse

MAX_HEADER_BYTES = 64 * 1024
MAX_URI_LENGTH = 1024

# RFC 3261 7.3.3 and the event packages' compact forms (RFC 6665 8.2.1 etc.).
_COMPACT = {
    "i": "call-id", "m": "contact", "e": "content-encoding",
    "l": "content-length", "c": "content-type", "f": "from", "s": "subject",
    "k": "supported", "t": "to", "v": "via", "o": "event", "u": "allow-events",
    "r": "refer-to", "b": "referred-by", "x": "session-expires",
}

_TOKEN = re.compile(r"^[A-Za-z0-9.!%*_+`'~-]+$")
# Call-ID is word ["@" word]: printable ASCII without spaces (RFC 3261 25.1).
_CALL_ID = re.compile(r"^[\x21-\x7e]{1,255}$")
_DIGITS = re.compile(r"[0-9]+\Z")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# What no stored address, log line or document may carry: C0 controls,
# DEL and C1 controls (what %-escapes may decode to).
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class BadRequest(Exception):
    """The request cannot be processed as sent: answered 400."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


_NAMES: dict[str, str] = {}


def canonical_name(name: str) -> str:
    """Lower-case full header name; remembered, since few names recur."""
    known = _NAMES.get(name)
    if known is None:
        known = name.strip().lower()
        known = _COMPACT.get(known, known)
        if len(_NAMES) < 512:
            _NAMES[name] = known
    return known


def is_token(text: str) -> bool:
    return bool(_TOKEN.match(text))


def printable(text: str) -> str:
    """Text fit for a log line or a terminal: control characters (C0,
    DEL, C1) as \\xNN escapes, so that nobody can forge or hide lines."""
    if not _CONTROL_CHARS.search(text):
        return text
    return _CONTROL_CHARS.sub(lambda m: "\\x%02x" % ord(m.group()), text)


@dataclasses.dataclass
class SipRequest:
    method: str
    uri: str
    headers: dict[str, list[str]]
    body: bytes = b""

    def header(self, name: str) -> str | None:
        """The first instance of a header field, or None."""
        values = self.headers.get(name)
        return values[0] if values else None

    def header_list(self, name: str) -> list[str]:
        """All comma-separated elements of every instance, in order."""
        items: list[str] = []
        for value in self.headers.get(name, ()):
            items.extend(split_list(value))
        return items

    def has(self, name: str) -> bool:
        return name in self.headers


def parse_request(data: bytes) -> SipRequest:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = data.partition(b"\n\n")
    if len(head) > MAX_HEADER_BYTES:
        raise BadRequest("Header Section Too Large")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("Header Not UTF-8") from None
    if _CONTROL.search(text):
        # RFC 3261 25.1: header text holds no control characters but tab.
        raise BadRequest("Control Character In Header")
    if text.count("\r") != text.count("\r\n"):
        # A CR that ends no line would be copied into the headers of our
        # NOTIFYs, where Kamailio ends a line at it.
        raise BadRequest("Bare CR In Header")
    lines = text.replace("\r\n", "\n").split("\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[2] != "SIP/2.0" or not is_token(parts[0]):
        raise BadRequest("Bad Request Line")
    headers: dict[str, list[str]] = {}
    name = None
    for line in lines[1:]:
        if line[:1] in (" ", "\t"):
            # Header folding (RFC 3261 7.3.1): continuation of the previous field.
            if name is None:
                raise BadRequest("Bad Header Folding")
            headers[name][-1] += " " + line.strip()
            continue
        field, colon, value = line.partition(":")
        if not colon or not field.strip():
            raise BadRequest("Malformed Header")
        name = canonical_name(field)
        headers.setdefault(name, []).append(value.strip())
    length = headers.get("content-length")
    if length:
        # Leading zeros are allowed; more than ten digits are not a length
        # any datagram or stream of ours can have.
        digits = length[0].lstrip("0")
        if not _DIGITS.match(length[0]) or len(digits) > 10:
            raise BadRequest("Bad Content-Length")
        # Over UDP the datagram may carry more than the body (RFC 3261 18.3).
        body = body[: int(digits or "0")]
    return SipRequest(method=parts[0], uri=parts[1], headers=headers, body=body)


def split_list(value: str) -> list[str]:
    """Split a header value on the commas that separate its elements,
    ignoring commas inside quoted strings and <...> URIs."""
    if "," not in value:
        value = value.strip()
        return [value] if value else []
    items, start, quoted, angle, i = [], 0, False, False, 0
    while i < len(value):
        ch = value[i]
        if quoted:
            if ch == "\\":
                i += 1
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "<":
            angle = True
        elif ch == ">":
            angle = False
        elif ch == "," and not angle:
            items.append(value[start:i].strip())
            start = i + 1
        i += 1
    items.append(value[start:].strip())
    return [item for item in items if item]


def parse_params(text: str) -> dict[str, str]:
    """';a=b;c' -> {'a': 'b', 'c': ''}; names lower-cased, quotes removed."""
    params: dict[str, str] = {}
    for piece in text.split(";"):
        piece = piece.strip()
        if not piece:
            continue
        key, _, val = piece.partition("=")
        val = val.strip()
        if len(val) >= 2 and val[0] == '"' and val[-1] == '"':
            val = val[1:-1]
        params[key.strip().lower()] = val
    return params


@dataclasses.dataclass(frozen=True)
class NameAddr:
    """A From/To/Contact/Record-Route value: display name, URI, parameters."""
    display: str
    uri: str
    params: dict[str, str]
    text: str  # the value without its tag parameter, as it should be echoed

    @property
    def tag(self) -> str:
        return self.params.get("tag", "")


_TAG_PARAM = re.compile(r";\s*tag\s*=\s*[^;]*", re.IGNORECASE)

# Header parameters (RFC 3261 25.1): *( SEMI generic-param ), generic-param
# = token [ EQUAL gen-value ], gen-value = token / host / quoted-string.
_TOKEN_CHARS = r"A-Za-z0-9.!%*_+`'~-"
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_HEADER_PARAMS = re.compile(
    rf"(?:\s*;\s*[{_TOKEN_CHARS}]+(?:\s*=\s*(?:[{_TOKEN_CHARS}]+|\[[0-9A-Fa-f:.]+\]|{_QUOTED}))?)*"
    r"\s*")


def parse_name_addr(value: str) -> NameAddr:
    """A From/To/Contact/Record-Route value: ( name-addr / addr-spec )
    *( SEMI generic-param ).  The URI is checked by whoever uses it
    (parse_uri); the parameters here, for they are echoed."""
    value = value.strip()
    display = ""
    rest = value
    if value.startswith('"'):
        i, end = 1, -1
        while i < len(value):
            if value[i] == "\\":
                i += 2
                continue
            if value[i] == '"':
                end = i
                break
            i += 1
        if end < 0:
            raise BadRequest("Unterminated Display Name")
        display = value[1:end]
        rest = value[end + 1:].lstrip()
        if not rest.startswith("<"):
            raise BadRequest("Malformed Name-Addr")
    if "<" in rest:
        before, _, after = rest.partition("<")
        uri, close, params = after.partition(">")
        if not close or '"' in before:
            raise BadRequest("Malformed Name-Addr")
        display = display or before.strip()
        head = value[: len(value) - len(params)]
    else:
        # addr-spec form: parameters after the URI belong to the header
        # field (RFC 3261 20: the URI then holds no ';', ',' or '?').
        uri, _, params = rest.partition(";")
        params = ";" + params if params else ""
        head = uri
    uri = uri.strip()
    if not uri or len(uri) > MAX_URI_LENGTH:
        raise BadRequest("Bad URI")
    if not _HEADER_PARAMS.fullmatch(params):
        raise BadRequest("Bad Header Parameters")
    untagged = head + _TAG_PARAM.sub("", params)
    return NameAddr(display=display, uri=uri, params=parse_params(params), text=untagged.strip())


@dataclasses.dataclass(frozen=True)
class SipUri:
    scheme: str
    user: str
    host: str
    port: int | None
    params: dict[str, str]

    @property
    def aor(self) -> str:
        """user@host compared as RFC 3261 19.1.4 says: the user part is
        case-sensitive once %-escapes are decoded, the host is not."""
        return f"{self.user}@{self.host}" if self.user else self.host


_SCHEMES = ("sip", "sips", "pres", "im")

# RFC 3261 25.1, SIP-URI = "sip:" [ userinfo ] hostport uri-parameters
# [ headers ].  The user part may hold ';', '?' and '/' (user-unreserved),
# so the URI is cut at its one '@' before parameters are looked for.
_UNRESERVED = r"A-Za-z0-9\-_.!~*'()"
_ESCAPED = r"%[0-9A-Fa-f]{2}"
_USER = re.compile(rf"(?:[{_UNRESERVED}&=+$,;?/]|{_ESCAPED})+")
_PASSWORD = re.compile(rf"(?:[{_UNRESERVED}&=+$,]|{_ESCAPED})*")
_PARAMCHAR = rf"(?:[{_UNRESERVED}\[\]/:&+$]|{_ESCAPED})"
_URI_PARAMS = re.compile(rf"(?:;{_PARAMCHAR}+(?:={_PARAMCHAR}+)?)*")
_HNV = rf"(?:[{_UNRESERVED}\[\]/?:+$]|{_ESCAPED})"
_URI_HEADERS = re.compile(rf"(?:\?{_HNV}+={_HNV}*(?:&{_HNV}+={_HNV}*)*)?")
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?")
_HOST_END = re.compile(r"[:;?]")


def parse_uri(text: str) -> SipUri:
    """A sip, sips, pres or im URI, by the grammar of RFC 3261 25.1;
    anything else is BadRequest.  The user part comes back %-decoded
    (UTF-8) and never holds a control character."""
    if len(text) > MAX_URI_LENGTH:
        raise BadRequest("Bad URI")
    scheme, colon, rest = text.partition(":")
    scheme = scheme.lower()
    if not colon or scheme not in _SCHEMES:
        raise BadRequest("Unsupported URI Scheme")
    userinfo, at, rest = rest.partition("@")
    if not at:
        userinfo, rest = "", userinfo
    user = ""
    if at:
        user, _, password = userinfo.partition(":")
        if not _USER.fullmatch(user) or not _PASSWORD.fullmatch(password):
            raise BadRequest("Bad URI User")
        if "%" in user:
            try:
                user = urllib.parse.unquote(user, errors="strict")
            except UnicodeDecodeError:
                raise BadRequest("Bad URI User") from None
            if _CONTROL_CHARS.search(user):
                raise BadRequest("Control Character In URI")
    host, port_text, params, headers = _split_hostport(rest)
    if not _URI_PARAMS.fullmatch(params) or not _URI_HEADERS.fullmatch(headers):
        raise BadRequest("Bad URI Parameters")
    port = None
    if port_text is not None:
        if not port_text.isascii() or not port_text.isdigit() or len(port_text) > 5 \
                or int(port_text) > 65535:
            raise BadRequest("Bad URI Port")
        port = int(port_text)
    return SipUri(scheme=scheme, user=user, host=host, port=port, params=parse_params(params))


def _split_hostport(rest: str) -> tuple[str, str | None, str, str]:
    """hostport uri-parameters [headers] -> host (lower-case), port text
    (None without ':'), ';...' and '?...'."""
    if rest.startswith("["):
        inside, bracket, rest = rest[1:].partition("]")
        try:
            ipaddress.IPv6Address(inside)
        except ValueError:
            bracket = ""
        if not bracket:
            raise BadRequest("Bad URI Host")
        host = "[" + inside.lower() + "]"
    else:
        cut = _HOST_END.search(rest)
        host, rest = (rest[:cut.start()], rest[cut.start():]) if cut else (rest, "")
        labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
        if not all(_LABEL.fullmatch(label) for label in labels):
            raise BadRequest("Bad URI Host")
        host = host.lower()
    port_text = None
    if rest.startswith(":"):
        cut = _HOST_END.search(rest, 1)
        port_text, rest = (rest[1:cut.start()], rest[cut.start():]) if cut else (rest[1:], "")
    params, question, headers = rest.partition("?")
    return host, port_text, params, question + headers


@dataclasses.dataclass(frozen=True)
class EventHeader:
    package: str
    id: str
    params: dict[str, str]


def parse_event(value: str | None) -> EventHeader | None:
    if value is None:
        return None
    package, _, params = value.partition(";")
    package = package.strip()
    if not package:
        return None
    parsed = parse_params(params)
    return EventHeader(package=package, id=parsed.get("id", ""), params=parsed)


def parse_delta_seconds(value: str, what: str) -> int:
    """Expires-like values (delta-seconds = 1*DIGIT, RFC 3261 25.1):
    leading zeros are allowed, and very large values are capped, not
    refused (RFC 3261 20.19: above 2**32-1 they mean 2**32-1)."""
    value = value.strip()
    if not _DIGITS.match(value):
        raise BadRequest(f"Bad {what}")
    digits = value.lstrip("0")
    if len(digits) > 10:
        return 2**32 - 1
    return min(int(digits or "0"), 2**32 - 1)


def parse_cseq(value: str | None) -> tuple[int, str]:
    if value is None:
        raise BadRequest("Missing CSeq")
    number, _, method = value.strip().partition(" ")
    digits = number.lstrip("0")
    if not _DIGITS.match(number) or len(digits) > 10 or int(digits or "0") >= 2**31:
        raise BadRequest("Bad CSeq")
    return int(digits or "0"), method.strip()


def check_call_id(value: str | None) -> str:
    if value is None or not _CALL_ID.match(value):
        raise BadRequest("Bad Call-ID")
    return value


def check_tag(tag: str) -> str:
    if len(tag) > 128 or not is_token(tag):
        raise BadRequest("Bad Tag")
    return tag


@dataclasses.dataclass(frozen=True)
class MediaRange:
    type: str      # "application/pidf+xml", "application/*" or "*/*"
    q: float


def parse_accept(values: list[str]) -> list[MediaRange]:
    ranges = []
    for item in values:
        media, _, params = item.partition(";")
        media = media.strip().lower()
        if "/" not in media:
            continue
        q = 1.0
        q_text = parse_params(params).get("q")
        if q_text is not None:
            try:
                q = max(0.0, min(1.0, float(q_text)))
            except ValueError:
                q = 0.0
        ranges.append(MediaRange(media, q))
    return ranges


def choose_media_type(request: SipRequest, offered: tuple[str, ...]) -> str | None:
    """The first of `offered` (server order) that the request's Accept
    admits; the first offered when there is no Accept header; None when
    nothing offered is acceptable (an empty Accept accepts nothing)."""
    if not request.has("accept"):
        return offered[0]
    ranges = parse_accept(request.header_list("accept"))
    for media in offered:
        kind = media.split("/")[0] + "/*"
        best = None
        # The most specific range that matches decides (RFC 7231 5.3.2 style).
        for pattern in (media, kind, "*/*"):
            match = [r.q for r in ranges if r.type == pattern]
            if match:
                best = max(match)
                break
        if best:
            return media
    return None
