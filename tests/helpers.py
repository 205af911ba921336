"""Small assertions shared by the integration tests."""

import time

from lxml import etree

PIDF_NS = "urn:ietf:params:xml:ns:pidf"


def pidf(body: bytes):
    """The PIDF document of a NOTIFY body, checked for its root."""
    root = etree.fromstring(body, etree.XMLParser(resolve_entities=False, no_network=True))
    assert root.tag == f"{{{PIDF_NS}}}presence", root.tag
    return root


def tuples(body: bytes) -> list[tuple[str, str]]:
    """(tuple id, basic status) of every tuple in a PIDF body."""
    root = pidf(body)
    return [(t.get("id"), t.findtext(f"{{{PIDF_NS}}}status/{{{PIDF_NS}}}basic"))
            for t in root.findall(f"{{{PIDF_NS}}}tuple")]


def pidf_body(presentity: str, tuple_id: str, basic: str, *, contact: str | None = None,
              priority: str | None = None, note: str | None = None, extra: str = "") -> bytes:
    """A published PIDF document with one tuple."""
    prio = f' priority="{priority}"' if priority else ""
    contact_el = f"<contact{prio}>{contact}</contact>" if contact else ""
    note_el = f"<note>{note}</note>" if note else ""
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<presence xmlns="{PIDF_NS}" entity="{presentity}">'
            f'<tuple id="{tuple_id}"><status><basic>{basic}</basic></status>{contact_el}</tuple>'
            f"{note_el}{extra}</presence>").encode()


def xcap(base: str, method: str, path: str, *, user: str | None = None,
         password: str | None = None, body: bytes | None = None,
         content_type: str = "application/auth-policy+xml", headers=None):
    """An HTTP request to an XCAP server, answering its digest challenge;
    returns (status, headers, body) whatever the status."""
    import urllib.error
    import urllib.request
    handlers = []
    if user is not None:
        passwords = urllib.request.HTTPPasswordMgrWithDefaultRealm()
        passwords.add_password(None, base, user, password)
        handlers.append(urllib.request.HTTPDigestAuthHandler(passwords))
    opener = urllib.request.build_opener(*handlers)
    request = urllib.request.Request(base + path, data=body, method=method,
                                     headers=dict(headers or {}))
    if body is not None:
        request.add_header("Content-Type", content_type)
    try:
        with opener.open(request, timeout=5) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def wait_until(predicate, timeout: float = 5.0, interval: float = 0.1):
    """Poll until predicate() is truthy; return its value or fail."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def wait_answered(database, call_id: str, timeout: float = 5.0) -> None:
    """Wait until the NOTIFY in flight of a subscription got its answer
    recorded: a change then goes out at once, not after that answer (it
    would otherwise come with the next, coalesced)."""
    wait_until(lambda: database.query("SELECT notify_deadline FROM pa_subscription"
                                      " WHERE call_id = %s", (call_id,)) == [(0,)], timeout)


def publish_event(ua, presentity, event, content_type, body=b"", *, etag=None, expires=None,
                  headers=(), timeout=5.0):
    """A PUBLISH of `event` (RFC 3903; no Event header when it is empty):
    initial with a body, a refresh (etag, no body), a modification (both)
    or a removal (expires 0)."""
    hdrs = [("Event", event)] if event else []
    if etag:
        hdrs.append(("SIP-If-Match", etag))
    if expires is not None:
        hdrs.append(("Expires", str(expires)))
    if body:
        hdrs.append(("Content-Type", content_type))
    return ua.request("PUBLISH", presentity, hdrs + list(headers), body, timeout=timeout)


def wait_view(ua, call_id, view, expected, timeout: float = 5.0):
    """Wait until `view` of a dialog's NOTIFYs (what a watcher that
    applies full and partial documents in order shows) is `expected`, as
    the latest NOTIFY or a later one leaves it; return that NOTIFY."""
    def made(n):
        notifies = ua.notifies(call_id)
        upto = next(i for i, m in enumerate(notifies) if m is n)
        return view(notifies[:upto + 1]) == expected
    return ua.wait_notify_until(call_id, made, timeout=timeout,
                                after=max(len(ua.notifies(call_id)) - 1, 0))
