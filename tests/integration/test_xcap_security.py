"""The built-in XCAP server and SIP digest on an open network, through
Kamailio's xhttp and auth modules: no reply can be split, every request is
answered, a captured Authorization proves one request of one target only,
and the nonce secret owes nothing to the database password."""

import hashlib
import hmac
import re
import socket

import pytest

from conftest import settings
from harness import Kamailio
from helpers import pidf_body
from sipua import SipUA, rand
from test_xcap_external import ruleset

PASSWORD = "s3cret"


@pytest.fixture(scope="module")
def kamailio(database):
    k = Kamailio(settings(database, auth="xcap")).start()
    yield k
    k.cleanup()


@pytest.fixture
def owner(database):
    user = "o" + rand(8)
    database.add_subscriber(user, "127.0.0.1", PASSWORD)
    return user


def rules_path(user: str) -> str:
    return f"/xcap-root/pres-rules/users/sip:{user}@127.0.0.1/index"


class Reply:
    def __init__(self, raw: bytes):
        self.raw = raw
        head, _, self.body = raw.partition(b"\r\n\r\n")
        # Lines as a lenient client sees them: a bare CR or LF ends one too.
        self.lines = re.split(rb"\r\n|\r|\n", head)
        self.status = int(self.lines[0].split(b" ")[1]) if self.lines[0].startswith(b"HTTP/") \
            else None

    def header(self, name: str) -> str | None:
        for line in self.lines[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == name.lower().encode():
                return value.strip().decode()
        return None


def http(kamailio, method: str, target: bytes | str, headers=(), body: bytes = b"",
         wait: float = 3.0) -> Reply | None:
    """One HTTP request as raw bytes; its reply (all the bytes that came
    back until the connection went quiet), or None without one."""
    if isinstance(target, str):
        target = target.encode()
    head = [method.encode() + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1"]
    head += [(k.encode() if isinstance(k, str) else k) + b": "
             + (v.encode() if isinstance(v, str) else v) for k, v in headers]
    head.append(b"Content-Length: %d" % len(body))
    s = socket.create_connection(kamailio.address, timeout=wait)
    try:
        s.sendall(b"\r\n".join(head) + b"\r\n\r\n" + body)
        raw = b""
        while True:
            try:
                data = s.recv(65535)
            except (socket.timeout, ConnectionError):
                break
            if not data:
                break
            raw += data
            s.settimeout(0.5)
    finally:
        s.close()
    return Reply(raw) if raw else None


def challenge(kamailio, target: str) -> dict[str, str]:
    reply = http(kamailio, "GET", target)
    assert reply.status == 401
    value = reply.header("WWW-Authenticate")
    return dict(part.strip().split("=", 1) for part in value[len("Digest "):].split(","))


def answer(params: dict, user: str, method: str, uri: str, nc: int = 1,
           realm: str = "127.0.0.1", password: str = PASSWORD) -> str:
    md5 = lambda s: hashlib.md5(s.encode()).hexdigest()  # noqa: E731
    nonce = params["nonce"].strip('"')
    cnonce = rand(8)
    ha1 = md5(f"{user}:{realm}:{password}")
    response = md5(f"{ha1}:{nonce}:{nc:08x}:{cnonce}:auth:{md5(f'{method}:{uri}')}")
    return (f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}",'
            f' response="{response}", algorithm=MD5, qop=auth, nc={nc:08x}, cnonce="{cnonce}"')


# -- no header, no body from a name -------------------------------------------

@pytest.mark.parametrize("xui", [
    "sip:alice@example.org%0d%0aSet-Cookie:%20x=y",
    "sip:alice%0d%0aSet-Cookie:%20x=y@example.org",
    "sip:alice@example.org%0aSet-Cookie:%20x=y",
    "sip:alice@example.org%0dSet-Cookie:%20x=y",
    "sip:alice@example.org%0d%0aContent-Length:%2024%0d%0a%0d%0a%3chtml%3epwned%3c%2fhtml%3e",
    "sip:alice@exa%22mple.org",
    "sip:alice@example.org%20x",
])
def test_a_name_in_the_path_cannot_split_the_reply(kamailio, xui):
    reply = http(kamailio, "GET", f"/xcap-root/pres-rules/users/{xui}/index")
    assert not any(line.lower().startswith(b"set-cookie") for line in reply.lines)
    assert b"pwned" not in reply.raw
    assert reply.raw.count(b"HTTP/1.1 ") == 1
    # Such a name is no user's: nothing to authenticate for.
    assert reply.status == 404


# -- every request an answer, at most one log line ------------------------------

def _hostile(owner):
    good = rules_path(owner)
    auth = 'Digest username="%s", realm="127.0.0.1", nonce="%s.%s", uri="%s",' \
           ' response="%s", qop=auth, nc=00000001, cnonce="c"'
    return [
        ("%00 in the domain", "GET", good.replace("127.0.0.1/", "127.0.0.1%00/"), (), {404}),
        ("%00 in the user", "GET", good.replace(f"{owner}@", f"{owner}%00@"), (), {404}),
        ("%ff in the user", "GET", good.replace(f"{owner}@", f"{owner}%ff@"), (), {404}),
        ("a raw byte above ASCII", "GET", good.encode().replace(b"@", b"\xff@"), (), {400}),
        ("NUL in Authorization", "GET", good,
         [("Authorization", (auth % (owner, "1", "2", good, "3")).encode().replace(b"=", b"=\0"))],
         {401}),
        ("Authorization not UTF-8", "GET", good,
         [("Authorization", (auth % (owner, "1", "2", good, "3")).encode() + b"\xff\xfe")],
         {401}),
        ("non-ASCII response", "GET", good,
         [("Authorization", auth % (owner, "6b0be1f5", "0" * 32, good, "\u00e9" * 32))], {401}),
        ("huge nonce expiry", "GET", good,
         [("Authorization", auth % (owner, "f" * 5000, "0" * 32, good, "0" * 32))], {401}),
        ("body not UTF-8", "PUT", good, [("Content-Type", "application/auth-policy+xml")],
         {401}),
    ]


def test_every_xcap_request_gets_an_answer_and_at_most_one_log_line(kamailio, owner):
    for name, method, target, headers, acceptable in _hostile(owner):
        before = kamailio.log().count("\n")
        body = b"\xff\xfe<x/>" if method == "PUT" else b""
        reply = http(kamailio, method, target, headers, body)
        assert reply is not None, f"{name}: no answer"
        assert reply.status in acceptable, f"{name}: {reply.status}"
        assert kamailio.log().count("\n") - before <= 1, f"{name}: {kamailio.log()[-2000:]}"
    assert "Traceback" not in kamailio.log()
    assert kamailio.alive()


# -- digest: one target, one use ----------------------------------------------

def test_credentials_computed_for_another_uri_are_refused(kamailio, owner):
    target = rules_path(owner)
    params = challenge(kamailio, target)
    elsewhere = answer(params, owner, "GET", "/xcap-root/pres-rules/users/sip:x@127.0.0.1/index")
    assert http(kamailio, "GET", target, [("Authorization", elsewhere)]).status == 400
    # The same nonce, for this uri: accepted (no document yet).
    right = answer(params, owner, "GET", target, nc=2)
    assert http(kamailio, "GET", target, [("Authorization", right)]).status == 404


def test_a_replayed_put_is_refused_by_every_node(database, kamailio, owner):
    target = rules_path(owner)
    other = Kamailio(settings(database, auth="xcap")).start()
    try:
        params = challenge(kamailio, target)
        captured = answer(params, owner, "PUT", target)
        put = [("Authorization", captured), ("Content-Type", "application/auth-policy+xml")]
        assert http(kamailio, "PUT", target, put, ruleset("allow")).status == 201
        for node in (kamailio, other):
            replay = http(node, "PUT", target, put, ruleset("block"))
            assert replay.status == 401
            assert "stale=true" in replay.header("WWW-Authenticate")
        # The nonce itself goes on working, on every node, counting up.
        reply = http(other, "GET", target, [("Authorization", answer(params, owner, "GET",
                                                                     target, nc=2))])
        assert (reply.status, reply.body) == (200, ruleset("allow"))
    finally:
        other.cleanup()


def test_the_nonce_secret_is_random_and_not_the_database_password(database, kamailio, owner):
    nonce = challenge(kamailio, rules_path(owner))["nonce"].strip('"')
    stamp, _, signature = nonce.rpartition(".")

    def signed(secret: str, message: str) -> str:
        key = hashlib.sha256(secret.encode()).digest()
        return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()[:32]
    # What 401s used to carry: a test of guesses at the database password
    # (signing the expiry in decimal, as they did, or the nonce's stamp).
    derived = f"pa-xcap:{database.password}:{database.name}"
    for message in (stamp, str(int(stamp.split(".")[0], 16))):
        assert signature != signed(derived, message)
    [(stored,)] = database.query("SELECT value FROM pa_secret WHERE name = 'xcap_nonce'")
    assert len(stored) >= 64 and database.password not in stored
    assert signature == signed(stored, stamp)
    # Each challenge its own nonce, even within one second.
    assert challenge(kamailio, rules_path(owner))["nonce"] != f'"{nonce}"'


def test_a_replayed_sip_authorization_is_refused(kamailio, owner):
    """auth's nonce_count in kamailio.cfg.sample: a PUBLISH's captured
    Authorization proves nothing for another PUBLISH; the next
    nonce-count does, and a retransmission gets its transaction's answer."""
    presentity = f"sip:{owner}@127.0.0.1"
    ua = SipUA(kamailio.address, user=owner)
    ua.credentials = (owner, PASSWORD)
    headers = [("Event", "presence"), ("Content-Type", "application/pidf+xml")]
    sent = {}

    def publish(note, authorization=None, cseq=1):
        call_id = rand()
        extra = [authorization] if authorization else []
        sent[note] = ua.build("PUBLISH", presentity, call_id=call_id, cseq=cseq,
                              from_=f"<{presentity}>;tag={rand()}", to=f"<{presentity}>",
                              headers=headers + extra,
                              body=pidf_body(presentity, "t", "open", note=note))
        ua.send_raw(sent[note])
        return ua.wait_response(call_id, cseq)
    try:
        captured = ua.authorization(publish("challenged"), "PUBLISH", presentity)
        first = publish("first", captured)
        assert first.status == 200
        # The same bytes again (a UDP retransmission): tm's answer, no challenge.
        ua.send_raw(sent["first"])
        assert ua.wait_response(first.call_id, 1).status == 200
        # Challenged again (407: auth_check challenges all but REGISTER as a proxy).
        assert publish("replayed", captured, cseq=7).status == 407
        name, value = captured
        nonce = value.split('nonce="')[1].split('"')[0]
        counted = answer({"nonce": nonce}, owner, "PUBLISH", presentity, nc=2)
        assert publish("counted", (name, counted)).status == 200
    finally:
        ua.close()
