"""Authorization documents from an external XCAP server (pa_domain): a
plain Python HTTP server serving fixed pres-rules, a slow one, a dead one."""

import http.server
import posixpath
import threading
import time
import urllib.parse

import pytest

from conftest import settings
from harness import Kamailio, free_port
from helpers import wait_until
from sipua import SipUA, rand

CP = "urn:ietf:params:xml:ns:common-policy"
PR = "urn:ietf:params:xml:ns:pres-rules"
PASSWORD = "pw"


def ruleset(handling: str) -> bytes:
    return (f'<cr:ruleset xmlns:cr="{CP}" xmlns:pr="{PR}"><cr:rule id="a"><cr:conditions/>'
            f"<cr:actions><pr:sub-handling>{handling}</pr:sub-handling></cr:actions>"
            "<cr:transformations><pr:provide-services><pr:all-services/>"
            "</pr:provide-services></cr:transformations></cr:rule></cr:ruleset>").encode()


class XcapServer:
    """Serves documents[path] = (etag, body); counts requests; `delay`
    seconds before answering.  Like many servers it looks a path up %-decoded
    and with its dot segments resolved (RFC 3986 5.2.4)."""

    def __init__(self):
        self.documents: dict[str, tuple[str, bytes]] = {}
        self.requests: list[tuple[str, str]] = []   # (path, If-None-Match)
        self.delay = 0.0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append((self.path, self.headers.get("If-None-Match", "")))
                time.sleep(server.delay)
                doc = server.documents.get(resolved(self.path))
                if doc is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                etag, body = doc
                if self.headers.get("If-None-Match") == f'"{etag}"':
                    self.send_response(304)
                    self.send_header("ETag", f'"{etag}"')
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("ETag", f'"{etag}"')
                self.send_header("Content-Type", "application/auth-policy+xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def resolved(path: str) -> str:
    return posixpath.normpath(urllib.parse.unquote(path))


@pytest.fixture(scope="module")
def server():
    s = XcapServer()
    yield s
    s.close()


@pytest.fixture(scope="module")
def kamailio(database, server):
    k = Kamailio(settings(database, auth="xcap", pa_domain=f"127.0.0.1:{server.port}",
                          xcap_timeout=1, auth_rules_refresh_time=2)).start()
    yield k
    k.cleanup()


@pytest.fixture
def watcher(kamailio, database):
    def make(user):
        database.add_subscriber(user, "127.0.0.1", PASSWORD)
        ua = SipUA(kamailio.address, user=user)
        ua.credentials = (user, PASSWORD)
        made.append(ua)
        return ua
    made = []
    yield make
    for ua in made:
        ua.close()


def path(presentity):
    return f"/xcap-root/pres-rules/users/{presentity}/index"


def test_rules_come_from_the_xcap_server_and_are_cached(server, watcher, presentity):
    server.documents[path(presentity)] = ("v1", ruleset("allow"))
    a = watcher("alice")
    r, d = a.subscribe(presentity)
    assert r.status == 200
    assert a.wait_notify(d.call_id).subscription_state()[0] == "active"
    fetched = [p for p, _ in server.requests if p == path(presentity)]
    assert len(fetched) == 1
    # Within auth_rules_refresh_time the copy serves the next watcher.
    b = watcher("bob")
    assert b.subscribe(presentity)[0].status == 200
    assert [p for p, _ in server.requests if p == path(presentity)] == fetched
    # Then the timer asks again, conditionally.
    wait_until(lambda: (path(presentity), '"v1"') in server.requests, timeout=6)


def test_a_changed_document_reevaluates_watchers(server, watcher, presentity):
    server.documents[path(presentity)] = ("v1", ruleset("confirm"))
    a = watcher("carol")
    _, d = a.subscribe(presentity)
    assert a.wait_notify(d.call_id).subscription_state()[0] == "pending"
    server.documents[path(presentity)] = ("v2", ruleset("allow"))
    # auth_rules_refresh_time is 2 s, the timer runs every second.
    n = a.wait_notify(d.call_id, 2, timeout=8)
    assert n.subscription_state()[0] == "active"


def test_a_slow_server_never_blocks_long_nor_lets_anyone_in(server, watcher, presentity):
    server.documents[path(presentity)] = ("v1", ruleset("allow"))
    server.delay = 5.0
    try:
        a = watcher("dave")
        started = time.monotonic()
        r, d = a.subscribe(presentity, timeout=10)
        waited = time.monotonic() - started
        assert r.status == 200
        assert a.wait_notify(d.call_id).subscription_state()[0] == "pending"
        # xcap_timeout is 1 s: the SUBSCRIBE waited about that, not the
        # server's 5 s.
        assert waited < 3.5
    finally:
        server.delay = 0.0


def test_a_dead_server_lets_nobody_in(database, watcher, presentity):
    dead = free_port()
    k = Kamailio(settings(database, auth="xcap", pa_domain=f"127.0.0.1:{dead}",
                          xcap_timeout=1)).start()
    try:
        database.add_subscriber("erin", "127.0.0.1", PASSWORD)
        ua = SipUA(k.address, user="erin")
        ua.credentials = ("erin", PASSWORD)
        try:
            r, d = ua.subscribe(presentity)
            assert r.status == 200
            assert ua.wait_notify(d.call_id).subscription_state()[0] == "pending"
        finally:
            ua.close()
        assert "not fetched" in k.log()
    finally:
        k.cleanup()


def test_rules_that_could_not_be_fetched_are_fetched_again(server, watcher, presentity):
    """The server fails the first fetch (too slow); the timer tries again
    later and the waiting watcher is let in once the rules arrive."""
    server.documents[path(presentity)] = ("v1", ruleset("allow"))
    server.delay = 5.0
    try:
        a = watcher("frank")
        r, d = a.subscribe(presentity, timeout=10)
        assert a.wait_notify(d.call_id).subscription_state()[0] == "pending"
    finally:
        server.delay = 0.0
    # The per-process pause after a failure is 10 s; refresh time 2 s.
    n = a.wait_notify(d.call_id, 2, timeout=20)
    assert n.subscription_state()[0] == "active"


@pytest.mark.parametrize("user", [
    # Decoded by the SIP parser: '/' in the user, refused.
    "..%2f..%2f..%2f..%2f..%2fxcap-root%2fpres-rules%2fusers%2fsip%3a{victim}",
    # Still %2f once decoded: must reach the server as one segment.
    "..%252f..%252f..%252f..%252f..%252fxcap-root%252fpres-rules%252fusers%252fsip%253a{victim}",
])
def test_a_presentity_name_cannot_walk_the_xcap_server(server, watcher, user):
    """A crafted Request-URI user must not make the client fetch another
    path (the victim's rules, cached as the crafted presentity's)."""
    victim = f"v{rand(8)}@127.0.0.1"
    server.documents[path(f"sip:{victim}")] = ("v1", ruleset("allow"))
    seen = len(server.requests)
    a = watcher("heidi")
    r, d = a.subscribe(f"sip:{user.format(victim=victim.split('@')[0])}@127.0.0.1")
    if r.status == 200:
        assert a.wait_notify(d.call_id).subscription_state()[0] == "pending"
    else:
        assert 400 <= r.status < 500
    assert path(f"sip:{victim}") not in [resolved(p) for p, _ in server.requests[seen:]]
