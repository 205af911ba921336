"""A small SIP user agent for the integration tests: it subscribes,
publishes, and answers the NOTIFYs it receives, over UDP or TCP.

It is written independently of pa_handlers (no shared parsing code), so
that a bug in the presence agent's SIP handling cannot hide in both.
"""

from __future__ import annotations

import hashlib
import itertools
import queue
import random
import re
import socket
import string
import threading
import time

_COMPACT = {"i": "call-id", "m": "contact", "l": "content-length", "c": "content-type",
            "f": "from", "t": "to", "v": "via", "o": "event", "u": "allow-events",
            "k": "supported"}


def rand(n=10) -> str:
    return "".join(random.choices(string.ascii_lowercase + string.digits, k=n))


class Message:
    def __init__(self, raw: bytes, source: tuple[str, int] | None = None):
        self.source = source  # where a UDP message came from
        head, _, body = raw.partition(b"\r\n\r\n")
        lines = head.decode("utf-8", "replace").split("\r\n")
        self.start = lines[0]
        self.headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            if line[:1] in " \t" and self.headers:
                name, value = self.headers[-1]
                self.headers[-1] = (name, value + " " + line.strip())
                continue
            name, _, value = line.partition(":")
            name = name.strip().lower()
            self.headers.append((_COMPACT.get(name, name), value.strip()))
        length = self.get("content-length")
        self.body = body[: int(length)] if length is not None else body
        self.received_at = time.monotonic()

    @property
    def is_request(self) -> bool:
        return not self.start.startswith("SIP/2.0 ")

    @property
    def method(self) -> str:
        return self.start.split(" ")[0] if self.is_request else self.cseq[1]

    @property
    def status(self) -> int:
        return int(self.start.split(" ")[1])

    @property
    def reason(self) -> str:
        return self.start.split(" ", 2)[2]

    @property
    def cseq(self) -> tuple[int, str]:
        number, method = self.get("cseq").split()
        return int(number), method

    @property
    def call_id(self) -> str:
        return self.get("call-id")

    def get(self, name: str) -> str | None:
        name = name.lower()
        for n, v in self.headers:
            if n == name:
                return v
        return None

    def all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for n, v in self.headers if n == name]

    def tag(self, name: str) -> str:
        m = re.search(r";\s*tag=([^;>\s]+)", self.get(name) or "")
        return m.group(1) if m else ""

    def subscription_state(self) -> tuple[str, dict[str, str]]:
        value = self.get("subscription-state") or ""
        state, *params = [p.strip() for p in value.split(";")]
        return state, dict(p.split("=", 1) if "=" in p else (p, "") for p in params)

    def __repr__(self):
        return f"<Message {self.start!r}>"


class Dialog:
    """The subscriber's side of a subscription dialog."""

    def __init__(self, call_id, local_tag, local_uri, remote_uri, event, cseq):
        self.call_id = call_id
        self.local_tag = local_tag
        self.remote_tag = ""
        self.local_uri = local_uri
        self.remote_uri = remote_uri
        self.event = event
        self.cseq = cseq
        self.target = remote_uri
        self.routes: list[str] = []


def split_stream(buffer: bytes) -> tuple[list[Message], bytes]:
    """The whole messages at the start of a stream's buffer (framed by
    Content-Length), and what is left."""
    messages = []
    while b"\r\n\r\n" in buffer:
        head, _, rest = buffer.partition(b"\r\n\r\n")
        m = re.search(rb"(?im)^(?:content-length|l)\s*:\s*(\d+)", head)
        length = int(m.group(1)) if m else 0
        if len(rest) < length:
            break
        messages.append(Message(head + b"\r\n\r\n" + rest[:length]))
        buffer = rest[length:]
    return messages, buffer


# Seconds a UDP reader waits before it looks whether its UA was closed.
READ_WAKEUP = 0.2


class SipUA:
    def __init__(self, server: tuple[str, int], transport: str = "udp", user: str = "alice",
                 host: str = "127.0.0.1"):
        self.server = server
        self.transport = transport
        self.user = user
        self.host = host
        self.aor = f"sip:{user}@{host}"
        if transport == "udp":
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.bind((host, 0))
            # The reader wakes up now and then to see whether the UA was
            # closed (see close()).
            self.sock.settimeout(READ_WAKEUP)
        else:
            self.sock = socket.create_connection(server, timeout=5)
            self.sock.settimeout(None)
        self.port = self.sock.getsockname()[1]
        self.contact = f"sip:{user}@{host}:{self.port};transport={transport}"
        # How to answer NOTIFYs: a status code, None for silence, or a
        # function of the NOTIFY returning either.
        self.notify_answer = 200
        # (user, password) to answer 401/407 digest challenges with.
        self.credentials: tuple[str, str] | None = None
        self.requests: "queue.Queue[Message]" = queue.Queue()
        self._responses: dict[tuple[str, int], "queue.Queue[Message]"] = {}
        self._notifies: dict[str, list[Message]] = {}
        self.errors: list[Exception] = []
        self._lock = threading.Condition()
        self._closed = False
        self._cseq = itertools.count(1)
        self._thread = threading.Thread(target=self._read_loop, daemon=True)
        self._thread.start()

    # -- transport ------------------------------------------------------

    def send_raw(self, data: bytes) -> None:
        if self.transport == "udp":
            self.sock.sendto(data, self.server)
        else:
            self.sock.sendall(data)

    def _read_loop(self):
        buffer = b""
        while not self._closed:
            try:
                if self.transport == "udp":
                    try:
                        data, source = self.sock.recvfrom(65535)
                    except socket.timeout:
                        continue
                    self._dispatch_safely(Message, data, source)
                    continue
                data = self.sock.recv(65535)
                if not data:
                    return
                messages, buffer = split_stream(buffer + data)
                for msg in messages:
                    self._dispatch_safely(lambda m, _: m, msg, None)
            except OSError:
                return

    def _dispatch_safely(self, make, data, source):
        # A message this UA cannot take (or a test's notify_answer that
        # raises) must not end the thread: every later answer would then
        # time out, far from the cause.  What went wrong is kept.
        try:
            self._dispatch(make(data, source))
        except Exception as error:
            import sys
            import traceback
            self.errors.append(error)
            print("sipua: message not handled:", file=sys.stderr)
            traceback.print_exc()

    def _dispatch(self, msg: Message):
        if msg.is_request:
            if msg.method == "NOTIFY":
                # Answered before a test sees it: a test that reacts to a
                # NOTIFY acts after its answer left, as a watcher would.
                answer = self.notify_answer(msg) if callable(self.notify_answer) else self.notify_answer
                if answer is not None:
                    self.respond(msg, answer)
                with self._lock:
                    self._notifies.setdefault(msg.call_id, []).append(msg)
                    self._lock.notify_all()
            else:
                self.requests.put(msg)
            return
        if msg.status < 200:
            return
        with self._lock:
            self._responses.setdefault((msg.call_id, msg.cseq[0]), queue.Queue()).put(msg)
            self._lock.notify_all()

    def respond(self, request: Message, code: int, reason: str = "OK") -> None:
        lines = [f"SIP/2.0 {code} {reason}"]
        for name in ("via",):
            lines += [f"Via: {v}" for v in request.all(name)]
        to = request.get("to")
        if "tag=" not in to:
            to += ";tag=" + rand()
        lines += [f"From: {request.get('from')}", f"To: {to}",
                  f"Call-ID: {request.call_id}", f"CSeq: {request.get('cseq')}",
                  "Content-Length: 0", "", ""]
        data = "\r\n".join(lines).encode()
        if self.transport == "udp" and request.source:
            # Answer where the request came from (RFC 3261 18.2.2): another
            # node may have sent it.
            self.sock.sendto(data, request.source)
        else:
            self.send_raw(data)

    def close(self):
        """Stop reading, then close the socket.  In that order: a reader
        about to call recvfrom on the socket's descriptor when it closes
        would read from whatever socket the next UA of the test opens with
        the same descriptor number, and take its answers."""
        self._closed = True
        try:
            if self.transport == "tcp":
                self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        if self._thread is not threading.current_thread():
            self._thread.join(READ_WAKEUP * 5)
        self.sock.close()

    # -- requests -------------------------------------------------------

    def build(self, method: str, ruri: str, *, call_id: str, from_: str, to: str, cseq: int,
              headers=(), body: bytes = b"", contact: bool | str = True) -> bytes:
        lines = [
            f"{method} {ruri} SIP/2.0",
            f"Via: SIP/2.0/{self.transport.upper()} {self.host}:{self.port};branch=z9hG4bK{rand()};rport",
            "Max-Forwards: 70",
            f"From: {from_}",
            f"To: {to}",
            f"Call-ID: {call_id}",
            f"CSeq: {cseq} {method}",
        ]
        if contact:
            lines.append(f"Contact: <{self.contact if contact is True else contact}>")
        lines += [f"{n}: {v}" for n, v in headers]
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    def wait_response(self, call_id: str, cseq: int, timeout: float = 5.0) -> Message:
        with self._lock:
            q = self._responses.setdefault((call_id, cseq), queue.Queue())
        try:
            return q.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no response to CSeq {cseq} of {call_id}") from None

    def authorization(self, challenge: Message, method: str, ruri: str) -> tuple[str, str] | None:
        """The header answering a 401/407 digest challenge (RFC 2617, MD5,
        qop=auth), or None without credentials."""
        if self.credentials is None or challenge.status not in (401, 407):
            return None
        name = "www-authenticate" if challenge.status == 401 else "proxy-authenticate"
        params = dict(re.findall(r'(\w+)="?([^",]*)"?', challenge.get(name) or ""))
        user, password = self.credentials
        md5 = lambda s: hashlib.md5(s.encode()).hexdigest()  # noqa: E731
        ha1 = md5(f"{user}:{params['realm']}:{password}")
        ha2 = md5(f"{method}:{ruri}")
        cnonce = rand()
        response = md5(f"{ha1}:{params['nonce']}:00000001:{cnonce}:auth:{ha2}")
        value = (f'Digest username="{user}", realm="{params["realm"]}", '
                 f'nonce="{params["nonce"]}", uri="{ruri}", response="{response}", '
                 f'algorithm=MD5, qop=auth, nc=00000001, cnonce="{cnonce}"')
        if "opaque" in params:
            value += f', opaque="{params["opaque"]}"'
        return ("Authorization" if challenge.status == 401 else "Proxy-Authorization", value)

    def request(self, method: str, ruri: str, headers=(), body: bytes = b"", *,
                to: str | None = None, timeout: float = 5.0, contact: bool = True) -> Message:
        """An out-of-dialog request; returns its final response (after
        answering a digest challenge when the UA has credentials)."""
        call_id = f"{rand()}@{self.host}"
        from_ = f"<{self.aor}>;tag={rand()}"
        extra: list = []
        while True:
            cseq = next(self._cseq)
            self.send_raw(self.build(method, ruri, call_id=call_id, from_=from_,
                                     to=to or f"<{ruri}>", cseq=cseq,
                                     headers=list(headers) + extra, body=body, contact=contact))
            response = self.wait_response(call_id, cseq, timeout)
            answer = None if extra else self.authorization(response, method, ruri)
            if answer is None:
                return response
            extra = [answer]

    def register(self, aor: str | None = None, expires: int | None = 60,
                 contact: str | None = None, q: str | None = None, headers=(),
                 timeout: float = 5.0) -> Message:
        """A REGISTER of `contact` (default: this UA) for `aor` (default:
        this UA's AOR); contact="*" with expires=0 removes all bindings.
        Refreshes reuse one Call-ID with growing CSeq (RFC 3261 10.2.4)."""
        aor = aor or self.aor
        if not hasattr(self, "_reg_call_id"):
            self._reg_call_id = f"reg-{rand()}@{self.host}"
        cseq = next(self._cseq)
        if contact == "*":
            contact_value = "*"
        else:
            contact_value = f"<{contact or self.contact}>" + (f";q={q}" if q else "")
        hdrs = [("Contact", contact_value)]
        if expires is not None:
            hdrs.append(("Expires", str(expires)))
        ruri = f"sip:{aor.split('@', 1)[1]}"
        extra: list = []
        while True:
            self.send_raw(self.build("REGISTER", ruri, call_id=self._reg_call_id,
                                     from_=f"<{aor}>;tag={rand()}", to=f"<{aor}>", cseq=cseq,
                                     headers=hdrs + list(headers) + extra, contact=False))
            response = self.wait_response(self._reg_call_id, cseq, timeout)
            answer = None if extra else self.authorization(response, "REGISTER", ruri)
            if answer is None:
                return response
            extra = [answer]
            cseq = next(self._cseq)

    # -- subscriptions --------------------------------------------------

    def subscribe(self, presentity: str, expires: int | None = 600, event: str = "presence",
                  headers=(), ruri: str | None = None, timeout: float = 5.0,
                  contact: bool | str = True):
        """An initial SUBSCRIBE; returns (final response, dialog)."""
        dialog = Dialog(f"{rand()}@{self.host}", rand(), f"<{self.aor}>", f"<{presentity}>",
                        event, 1)
        dialog.target = ruri or presentity
        response = self._send_subscribe(dialog, expires, headers, ruri or presentity, timeout,
                                        contact)
        answer = self.authorization(response, "SUBSCRIBE", ruri or presentity)
        if answer is not None:
            dialog.cseq += 1
            response = self._send_subscribe(dialog, expires, list(headers) + [answer],
                                            ruri or presentity, timeout)
        if 200 <= response.status < 300:
            dialog.remote_tag = response.tag("to")
            contact = response.get("contact")
            if contact:
                dialog.target = contact.strip("<>").split(">")[0]
        return response, dialog

    def resubscribe(self, dialog: Dialog, expires: int | None, headers=(),
                    timeout: float = 5.0, contact: bool | str = True) -> Message:
        """An in-dialog SUBSCRIBE (refresh, or Expires: 0 to end it)."""
        dialog.cseq += 1
        return self._send_subscribe(dialog, expires, headers, dialog.target, timeout, contact)

    def _send_subscribe(self, dialog: Dialog, expires, headers, ruri, timeout,
                        contact: bool | str = True) -> Message:
        hdrs = [("Event", dialog.event)]
        if expires is not None:
            hdrs.append(("Expires", str(expires)))
        hdrs += list(headers)
        to = dialog.remote_uri + (f";tag={dialog.remote_tag}" if dialog.remote_tag else "")
        self.send_raw(self.build("SUBSCRIBE", ruri, call_id=dialog.call_id,
                                 from_=f"{dialog.local_uri};tag={dialog.local_tag}", to=to,
                                 cseq=dialog.cseq, headers=hdrs, contact=contact))
        return self.wait_response(dialog.call_id, dialog.cseq, timeout)

    def notifies(self, call_id: str) -> list[Message]:
        with self._lock:
            return list(self._notifies.get(call_id, []))

    def wait_notify(self, call_id: str, count: int = 1, timeout: float = 5.0) -> Message:
        """Wait until `count` NOTIFYs arrived in the dialog; return the
        count-th (1-based)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self._notifies.get(call_id, [])) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    got = len(self._notifies.get(call_id, []))
                    raise TimeoutError(f"{got} NOTIFYs in {call_id}, expected {count}")
                self._lock.wait(left)
            return self._notifies[call_id][count - 1]

    def wait_notify_until(self, call_id: str, predicate, timeout: float = 5.0,
                          after: int = 0) -> Message:
        """Wait until a NOTIFY of the dialog, the after-th (0-based) or a
        later one, satisfies `predicate`; return the first that does.
        Changes made while a NOTIFY is in flight come coalesced into one
        (RFC 3856 6.4), so a test waits for the state it expects, not for
        a number of NOTIFYs."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                got = self._notifies.get(call_id, [])
                for n in got[after:]:
                    if predicate(n):
                        return n
                after = max(after, len(got))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no NOTIFY as expected in {call_id} ({len(got)} came)")
                self._lock.wait(left)

    def quiet(self, call_id: str, seconds: float) -> list[Message]:
        """The NOTIFYs that arrive in the dialog within `seconds`."""
        before = len(self.notifies(call_id))
        time.sleep(seconds)
        return self.notifies(call_id)[before:]


RLMI_NS = "urn:ietf:params:xml:ns:rlmi"


def multipart(msg: Message) -> tuple[dict[str, str], list[tuple[dict[str, str], bytes]]]:
    """The parameters of a multipart NOTIFY's Content-Type and its parts,
    (lower-case headers, body) each (RFC 2046 5.1)."""
    content_type = msg.get("content-type") or ""
    media, _, rest = content_type.partition(";")
    assert media.strip().lower().startswith("multipart/"), content_type
    params = {}
    for item in rest.split(";"):
        name, eq, value = item.strip().partition("=")
        if eq:
            params[name.strip().lower()] = value.strip().strip('"')
    delimiter = b"--" + params["boundary"].encode()
    body = msg.body
    assert body.rstrip().endswith(delimiter + b"--"), "no close delimiter"
    parts = []
    for chunk in body.split(delimiter)[1:-1]:
        chunk = chunk.removeprefix(b"\r\n").removesuffix(b"\r\n")
        head, _, content = chunk.partition(b"\r\n\r\n")
        headers = {}
        for line in head.decode().split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        parts.append((headers, content))
    return params, parts


class ListNotify:
    """A list NOTIFY (RFC 4662) read: the RLMI root and the members'
    documents by Content-ID."""

    def __init__(self, msg: Message):
        from lxml import etree
        self.msg = msg
        self.params, parts = multipart(msg)
        by_cid = {h.get("content-id", "").strip("<>"): (h, b) for h, b in parts}
        root_headers, root_body = by_cid[self.params["start"].strip("<>")]
        assert root_headers["content-type"] == "application/rlmi+xml"
        self.parts = by_cid
        self.rlmi = etree.fromstring(root_body)
        assert self.rlmi.tag == f"{{{RLMI_NS}}}list"

    @property
    def version(self) -> int:
        return int(self.rlmi.get("version"))

    @property
    def full(self) -> bool:
        return self.rlmi.get("fullState") == "true"

    def resources(self) -> dict[str, dict]:
        """uri -> {name, state, reason, cid, body} of each resource."""
        out = {}
        for r in self.rlmi.findall(f"{{{RLMI_NS}}}resource"):
            instance = r.find(f"{{{RLMI_NS}}}instance")
            entry = {"name": r.findtext(f"{{{RLMI_NS}}}name"), "state": None, "reason": None,
                     "cid": None, "body": None}
            if instance is not None:
                entry.update(state=instance.get("state"), reason=instance.get("reason"),
                             cid=instance.get("cid"))
                if entry["cid"]:
                    headers, body = self.parts[entry["cid"]]
                    entry["body"] = body
                    entry["type"] = headers.get("content-type")
            out[r.get("uri")] = entry
        return out
