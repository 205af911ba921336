"""Which of a presentity's publications speak in its document, and in what
order: the composition policy (RFC 3903 4, RFC 4479 10) that runs before
pidf.compose (through presence.py), whose output order is the order given
here.

Many phones show one tuple only (pjsua its first, baresip its first
<basic>), so the document's first tuple must be the best answer to "is
this person reachable, and what do they say".  The rule:

1. A device that publishes speaks for itself.  A registration binding
   (origin 'registrar') is left out while a live PUBLISHed publication
   comes from the same device: the publication's source (its Contact's
   +sip.instance, else its Contact address, else the address it came from;
   see compositor._source) is one of the binding's device keys (the
   binding's +sip.instance, its Contact address, and the address its
   REGISTER came from).  The binding returns when the publication ends.
2. Published state comes before registration state: a publication is what
   the person says, a binding only that a phone is switched on.
3. Within each, reachable first: publications with an open tuple, then
   those whose tuples give no basic status, then closed ones (a binding
   that was just removed lingers closed for a moment, and must not hide
   another device that is registered); among equals, the higher contact
   priority (RFC 3863) first; then the older publication first, so that
   the order is stable and a refresh moves nothing.

The rule is a function of the set of live publications alone, never of
the order in which they were stored: a REGISTER saved a moment after its
device's first PUBLISH gives the same document as one saved before.
"""

from __future__ import annotations

from typing import Iterable

from . import pidf
from .sip import parse_uri

REGISTRAR = "registrar"
_REACHABILITY = {"open": 0, "": 1, "closed": 2}


def arrange(publications: Iterable[tuple[str, str, bytes]]) -> list[pidf.Parts]:
    """The parts to compose, in document order, from the live publications
    as stored: (origin, source, parts), oldest first."""
    published: list[pidf.Parts] = []
    bindings: list[pidf.Parts] = []
    speaking: set[str] = set()
    for origin, source, data, *_ in publications:
        parts = pidf.Parts.loads(data)
        if origin == REGISTRAR:
            bindings.append(parts)
        else:
            published.append(parts)
            speaking.add(source)
    bindings = [b for b in bindings if speaking.isdisjoint(b.devices)]
    # sorted() is stable: equals keep their stored (oldest first) order.
    return sorted(published, key=_rank) + sorted(bindings, key=_rank)


def _rank(parts: pidf.Parts) -> tuple[int, float]:
    """How good an answer a publication is: its best status, and the best
    priority among its tuples of that status."""
    best, priority = len(_REACHABILITY), 0.0
    for t in parts.tuples:
        reach = _REACHABILITY.get(t.basic, 1)
        p = _priority(t.priority)
        if reach < best or (reach == best and p > priority):
            best, priority = reach, p
    return best, -priority


def _priority(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return 0.0


# -- device keys: how a publication and a binding name their device ---------

def instance_key(instance: str) -> str:
    """RFC 5626 +sip.instance, as a Contact parameter gives it
    ("<urn:uuid:...>", also as stored by earlier versions), as usrloc keeps
    it, or as a GRUU's gr parameter names it (without the brackets)."""
    value = instance.strip().strip('"')
    if not value.startswith("<"):
        value = f"<{value}>"
    return "instance:" + value[:200]


def contact_key(uri: str) -> str:
    """A Contact address: user@host and port, without parameters."""
    parsed = parse_uri(uri)
    port = f":{parsed.port}" if parsed.port else ""
    return f"contact:{parsed.aor}{port}"[:500]


def address_key(source: str) -> str:
    """The transport address a request came from, proto:ip:port."""
    return "address:" + source
