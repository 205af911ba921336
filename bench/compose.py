#!/usr/bin/python3
"""Composition cost: how long pidf.compose takes on hostile and on the
largest allowed input, and what a whole PUBLISH costs the core (parse,
store form, compose) without the database.

    /usr/bin/python3 bench/compose.py

Prints one line per case with the best of a few runs (CPU time of this
process).  No assertion: speed is measured here, never in the tests.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pa_handlers import pidf  # noqa: E402
from pa_handlers.config import Settings  # noqa: E402

PRESENTITY = "alice@example.com"
HEAD = (f'<?xml version="1.0"?><presence xmlns="{pidf.PIDF_NS}"'
        ' xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" entity="sip:alice@example.com">')


def document(elements: list[str]) -> bytes:
    return (HEAD + "".join(elements) + "</presence>").encode()


def full_publication(n: int, elements: int, pad: int) -> pidf.Parts:
    """A publication of `elements` top-level elements, each with `pad`
    bytes of text, whose ids collide with every other publication's."""
    half = elements // 2
    return pidf.parse_publication(document(
        [f'<tuple id="a"><status><basic>open</basic></status><note>{n:x}.{i:x}{"t" * pad}'
         '</note></tuple>' for i in range(half)]
        + [f'<dm:person id="p"><dm:note>{n:x}.{i:x}{"p" * pad}</dm:note></dm:person>'
           for i in range(elements - half)]), 0.5)


def best(work, runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        start = time.process_time()
        work()
        times.append(time.process_time() - start)
    return min(times)


def case(name: str, work, runs: int = 3) -> None:
    print(f"{name:<72} {best(work, runs) * 1000:9.1f} ms", flush=True)


def main() -> None:
    defaults = {f: Settings.__dataclass_fields__[f].default
                for f in ("max_publication_elements", "max_publications", "max_document_bytes")
                if f in Settings.__dataclass_fields__}
    print("limits:", defaults or "none (code before the limits)")

    # The attack of the hardening issue: 64 kB of <tuple id="a"/>, parsed
    # without a limit, so this measures compose() alone.
    attack = pidf.Parts([pidf.Tuple("a", "", "", "", '<tuple id="a"/>')] * 4280, [], [])
    for n in (1, 2, 3):
        case(f"compose {n} x 4280 tuples with the same id (the attack)",
             lambda: pidf.compose(PRESENTITY, [attack] * n), runs=1 if n > 1 else 3)

    # The largest input the limits allow: every publication full, every
    # element's id colliding with the other publications'.  (The elements
    # alone make about the default max_document_bytes.)
    elements = defaults.get("max_publication_elements", 32)
    publications = defaults.get("max_publications", 16)
    limit = defaults.get("max_document_bytes", 48 * 1024)

    def aggregate(pad: int) -> list[bytes]:
        return [full_publication(n, elements, pad).dumps() for n in range(publications)]

    stored = aggregate(0)
    composed = pidf.compose(PRESENTITY, [pidf.Parts.loads(p) for p in stored])
    case(f"compose the most elements allowed: {publications} x {elements} ({len(composed)} bytes)",
         lambda: pidf.compose(PRESENTITY, [pidf.Parts.loads(p) for p in stored]), runs=20)
    if hasattr(pidf, "compose_within"):
        doubled = aggregate(2 * limit // (elements * publications))
        case(f"compose_within {limit} bytes from twice as much (nobody refusable)",
             lambda: pidf.compose_within(PRESENTITY, [pidf.Parts.loads(p) for p in doubled],
                                         limit), runs=20)

    big = document(['<tuple id="a"><status><basic>open</basic></status>'
                    f'<note>{"x" * 1800}</note></tuple>'] * elements)
    case(f"parse a {len(big)} byte publication of {elements} tuples",
         lambda: pidf.parse_publication(big, 0.5), runs=20)


if __name__ == "__main__":
    main()
