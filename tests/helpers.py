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
