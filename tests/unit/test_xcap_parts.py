import hashlib
import urllib.parse

import pytest
from lxml import etree

from pa_handlers import pidf, winfo
from pa_handlers.authorization import document_path, owner_of, path_pattern
from pa_handlers.digest import Digest, WrongTarget
from pa_handlers.presrules import DEVICES, NOTHING, PERSONS, SERVICES

TEMPLATE = "/xcap-root/pres-rules/users/{xui}/index"


def test_document_path_and_its_pattern_agree():
    path = document_path(TEMPLATE, "alice@example.com")
    assert path == "/xcap-root/pres-rules/users/sip:alice@example.com/index"
    assert owner_of(path_pattern(TEMPLATE).match(path)) == "alice@example.com"
    encoded = "/xcap-root/pres-rules/users/sip%3Aalice%40EXAMPLE.com/index"
    assert owner_of(path_pattern(TEMPLATE).match(encoded)) == "alice@example.com"
    assert path_pattern(TEMPLATE).match("/xcap-root/resource-lists/users/sip:a@b/index") is None
    split = "/rules/{domain}/{user}.xml"
    assert owner_of(path_pattern(split).match("/rules/example.com/bob.xml")) == "bob@example.com"


def _md5(s):
    return hashlib.md5(s.encode()).hexdigest()


def _answer(challenge, user, password, method, uri, realm="example.com", nc="00000001"):
    nonce = challenge.split('nonce="')[1].split('"')[0]
    ha1 = _md5(f"{user}:{realm}:{password}")
    response = _md5(f"{ha1}:{nonce}:{nc}:c0ffee:auth:{_md5(f'{method}:{uri}')}")
    return (f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
            f'response="{response}", qop=auth, nc={nc}, cnonce="c0ffee", algorithm=MD5')


class _Uses:
    """first_use for the tests: remembers (nonce, nc) in a set."""

    def __init__(self):
        self.seen = set()

    def __call__(self, nonce, nc, expiry):
        fresh = (nonce, nc) not in self.seen
        self.seen.add((nonce, nc))
        return fresh


def test_digest_accepts_the_right_password_only():
    digest = Digest(b"secret")
    ha1s = {("alice", "example.com"): _md5("alice:example.com:pw")}
    lookup = lambda u, r: ha1s.get((u, r))  # noqa: E731

    def verify(header, method="GET", realm="example.com", now=1000, d=digest):
        return d.verify(header, method, "/x", realm, lookup, now, _Uses())
    challenge = digest.challenge("example.com", 1000)
    good = _answer(challenge, "alice", "pw", "GET", "/x")
    assert verify(good) == ("alice", False)
    assert verify(_answer(challenge, "alice", "nope", "GET", "/x")) == (None, False)
    # The method is part of the proof; the realm must be the one asked for.
    assert verify(good, "PUT")[0] is None
    assert verify(good, realm="example.org")[0] is None
    # An expired nonce is stale, not a wrong password; a forged one is refused.
    assert verify(good, now=1000 + 301) == (None, True)
    assert verify(good, d=Digest(b"other"))[0] is None
    assert verify(None) == (None, False)


def test_digest_answers_prove_one_request_of_one_target():
    digest = Digest(b"secret")
    lookup = lambda u, r: _md5("alice:example.com:pw")  # noqa: E731
    uses = _Uses()
    challenge = digest.challenge("example.com", 1000)
    first = _answer(challenge, "alice", "pw", "PUT", "/x")
    assert digest.verify(first, "PUT", "/x", "example.com", lookup, 1000, uses) == ("alice", False)
    # The same answer again is a replay; the next nonce-count is not.
    assert digest.verify(first, "PUT", "/x", "example.com", lookup, 1001, uses) == (None, True)
    second = _answer(challenge, "alice", "pw", "PUT", "/x", nc="00000002")
    assert digest.verify(second, "PUT", "/x", "example.com", lookup, 1001, uses) == \
        ("alice", False)
    # An answer computed for another uri proves nothing about this one.
    other = _answer(challenge, "alice", "pw", "PUT", "/y", nc="00000003")
    with pytest.raises(WrongTarget):
        digest.verify(other, "PUT", "/x", "example.com", lookup, 1001, uses)
    absolute = _answer(challenge, "alice", "pw", "PUT", "http://h:5060/x", nc="00000004")
    assert digest.verify(absolute, "PUT", "/x", "example.com", lookup, 1001, uses)[0] == "alice"
    # Each challenge its own nonce, even within one second.
    assert digest.challenge("example.com", 1000) != digest.challenge("example.com", 1000)
    # Another spelling of the nonce is not another nonce.
    expiry, _, sign = challenge.split('nonce="')[1].split('"')[0].partition(".")
    respelled = challenge.replace(f"{expiry}.", f"0{expiry.upper()}.")
    again = _answer(respelled, "alice", "pw", "PUT", "/x", nc="00000005")
    assert digest.verify(again, "PUT", "/x", "example.com", lookup, 1001, uses)[0] is None


def test_a_challenge_quotes_its_realm():
    challenge = Digest(b"s").challenge('exa"mple\\', 0)
    assert challenge.startswith('Digest realm="exa\\"mple\\\\", nonce=')


@pytest.mark.parametrize("part", ["alice\r\nSet-Cookie: x=y", "al ice", 'al"ice', "a/b",
                                  "a\x00", "a\x7f", "a\u2028b", ""])
def test_names_that_cannot_be_a_path_segment(part):
    pattern = path_pattern(TEMPLATE)
    for xui in (f"sip:{part}@example.com", f"sip:alice@{part}"):
        quoted = urllib.parse.quote(xui, safe=":@")
        assert owner_of(pattern.match(f"/xcap-root/pres-rules/users/{quoted}/index")) is None
    assert document_path(TEMPLATE, f"{part}@example.com") is None
    assert document_path(TEMPLATE, f"alice@{part}") is None


def test_each_placeholder_is_encoded_on_its_own():
    assert document_path(TEMPLATE, "a%2f..?#b@example.com") == \
        "/xcap-root/pres-rules/users/sip:a%252f..%3F%23b@example.com/index"
    assert document_path("/r/{domain}/{user}.xml", "b;x=1%@example.com") == \
        "/r/example.com/b;x=1%25.xml"
    path = document_path(TEMPLATE, "a%2f..?#b@example.com")
    assert owner_of(path_pattern(TEMPLATE).match(path)) == "a%2f..?#b@example.com"


def _aggregate():
    dm = "urn:ietf:params:xml:ns:pidf:data-model"
    doc = (f'<presence xmlns="{pidf.PIDF_NS}" xmlns:dm="{dm}" entity="sip:bob@x">'
           '<tuple id="t"><status><basic>open</basic></status></tuple><note>hi</note>'
           '<dm:person id="p"/><dm:device id="d"/></presence>').encode()
    return pidf.compose("bob@x", [pidf.parse_publication(doc, 0.5)])


def _children(body: str):
    return [etree.QName(c).localname for c in etree.fromstring(body.encode())]


def test_views_show_only_what_permissions_allow():
    doc = _aggregate()
    assert _children(pidf.render(doc, "bob@x", pidf.PIDF, SERVICES | PERSONS | DEVICES)) == \
        ["tuple", "note", "person", "device"]
    assert _children(pidf.render(doc, "bob@x", pidf.PIDF, PERSONS)) == ["tuple", "person"]
    only_devices = pidf.render(doc, "bob@x", pidf.PIDF, DEVICES)
    assert _children(only_devices) == ["tuple", "device"] and "pa-closed" in only_devices
    neutral = pidf.render(doc, "bob@x", pidf.PIDF, NOTHING)
    assert neutral == pidf.closed_document("bob@x").decode()


def test_watcherinfo_document():
    entries = [winfo.WatcherEntry("w1", "sip:alice@x", "pending", "subscribe", 'A "B"', 60)]
    root = etree.fromstring(winfo.document("bob@x", 3, False, entries,
                                           winfo.Limits(8, 64, 49152),
                                           package="presence").encode())
    assert (root.get("version"), root.get("state")) == ("3", "partial")
    wl = root.find(f"{{{winfo.WINFO_NS}}}watcher-list")
    assert (wl.get("resource"), wl.get("package")) == ("sip:bob@x", "presence")
    w = wl.find(f"{{{winfo.WINFO_NS}}}watcher")
    assert (w.get("id"), w.get("status"), w.get("event"), w.get("display-name"), w.text) == \
        ("w1", "pending", "subscribe", 'A "B"', "sip:alice@x")
