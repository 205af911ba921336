"""Parsing XML that arrives from the network, as hostile input: bounded
size and depth, no DTD, no entities, no network access."""

from __future__ import annotations

from lxml import etree

MAX_DEPTH = 32
MAX_ELEMENTS = 5000

PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                         dtd_validation=False, huge_tree=False, remove_comments=True,
                         remove_pis=True, collect_ids=False)


class UnsafeXml(Exception):
    """Not acceptable XML; `reason` is fit for a reply's reason phrase."""

    def __init__(self, reason: str, too_large: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.too_large = too_large


def parse(body: bytes, max_bytes: int):
    """The root element of `body`, or UnsafeXml."""
    if len(body) > max_bytes:
        raise UnsafeXml("Document Too Large", too_large=True)
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        raise UnsafeXml("Document Not UTF-8") from None
    # A DTD is where entity bombs and external entities live; presence
    # documents never need one, so refuse it before the parser sees it.
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        raise UnsafeXml("DTD Not Allowed")
    try:
        root = etree.fromstring(body, PARSER)
    except (etree.XMLSyntaxError, ValueError):
        raise UnsafeXml("Document Not Well-Formed") from None
    if root.getroottree().docinfo.internalDTD is not None:
        raise UnsafeXml("DTD Not Allowed")
    count = 0
    stack = [(root, 1)]
    while stack:
        element, depth = stack.pop()
        count += 1
        if depth > MAX_DEPTH or count > MAX_ELEMENTS:
            raise UnsafeXml("Document Too Deep Or Too Large")
        stack.extend((child, depth + 1) for child in element)
    return root
