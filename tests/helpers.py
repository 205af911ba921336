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
