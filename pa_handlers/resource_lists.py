"""Resource lists (RFC 4826): the two XML documents a user keeps on the
XCAP server, and how a list URI becomes the flat list of resources a list
subscription serves.

    resource-lists   (RFC 4826 3) a user's named lists of entries, each
                     list holding <entry uri>, <entry-ref ref> (a relative
                     XCAP path to an <entry>), <external anchor> (an
                     absolute XCAP URI of a <list>) and nested <list>s
    rls-services     (RFC 4826 4) the user's list URIs: each <service uri>
                     holds a <resource-list> (an XCAP URI of a <list>) or
                     an inline <list>, and optional <packages>

References are resolved here (RFC 4826 4.5): only to the documents of the
list's own owner on this server (another user's lists are not the
owner's to publish, and other servers are not fetched), nesting at most
`max_depth` levels deep, a list reached again through its own references
is a Loop.  Members are deduplicated by URI (case-sensitive, as 4.5 says)
and kept only with a subscribable scheme (sip, sips, pres).

Everything here is pure: documents come in as bytes (from the network:
parsed with xmlsafe) and a `fetch` callable for the owner's documents.
"""

from __future__ import annotations

import re
import urllib.parse
from typing import Callable, NamedTuple

from . import xmlsafe
from .sip import BadRequest, parse_uri

RL_NS = "urn:ietf:params:xml:ns:resource-lists"
RLS_NS = "urn:ietf:params:xml:ns:rls-services"
RESOURCE_LISTS = "resource-lists"       # XCAP AUIDs (RFC 4826 3.4.1, 4.4.1)
RLS_SERVICES = "rls-services"
RL_TYPE = "application/resource-lists+xml"
RLS_TYPE = "application/rls-services+xml"
SUBSCRIBABLE = ("sip", "sips", "pres")
# The document every user keeps its lists and services in (RFC 4826 3.4.8, 4.4.8).
INDEX = "index"


class InvalidDocument(Exception):
    """A document the XCAP server refuses: `condition` is the RFC 4825
    11 error element (not-well-formed, schema-validation-error,
    uniqueness-failure, constraint-failure), `too_large` a 413."""

    def __init__(self, reason: str, condition: str = "schema-validation-error",
                 too_large: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.condition = condition
        self.too_large = too_large


class ListError(Exception):
    """A list that cannot be served: `kind` is 'loop', 'depth' or
    'members'."""

    def __init__(self, kind: str, detail: str):
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


class Member(NamedTuple):
    """One resource of a flattened list."""
    uri: str
    presentity: str     # user@host, how local presentities are keyed
    name: str           # its display-name ('' when none)


# -- parsing ------------------------------------------------------------------------

def _local(element) -> str:
    tag = element.tag
    return tag.rpartition("}")[2] if isinstance(tag, str) else ""


def _ns(element) -> str:
    tag = element.tag
    return tag[1:].partition("}")[0] if isinstance(tag, str) and tag.startswith("{") else ""


def _parse(body: bytes, max_bytes: int, ns: str, root_name: str):
    try:
        root = xmlsafe.parse(body, max_bytes)
    except xmlsafe.UnsafeXml as e:
        raise InvalidDocument(e.reason, "not-well-formed", e.too_large) from None
    if _ns(root) != ns or _local(root) != root_name:
        raise InvalidDocument(f"Root Is Not {root_name}")
    return root


def parse_resource_lists(body: bytes, max_bytes: int):
    """The root of a valid resource-lists document, or InvalidDocument."""
    root = _parse(body, max_bytes, RL_NS, "resource-lists")
    _check_lists(root)
    return root


def _check_lists(parent) -> None:
    """What RFC 4826 3.3's schema and uniqueness constraints require:
    list names unique among siblings, entry URIs unique within their list,
    each reference with its attribute."""
    names: set[str] = set()
    uris: set[str] = set()
    for child in parent:
        if _ns(child) != RL_NS:
            continue    # extensions are allowed (##other)
        kind = _local(child)
        if kind == "list":
            name = child.get("name")
            if name is not None:
                if name in names:
                    raise InvalidDocument("List Name Not Unique", "uniqueness-failure")
                names.add(name)
            _check_lists(child)
        elif kind == "entry":
            uri = child.get("uri")
            if not uri:
                raise InvalidDocument("Entry Without uri")
            if uri in uris:
                raise InvalidDocument("Entry URI Not Unique", "uniqueness-failure")
            uris.add(uri)
        elif kind == "entry-ref" and not child.get("ref"):
            raise InvalidDocument("entry-ref Without ref")
        elif kind == "external" and not child.get("anchor"):
            raise InvalidDocument("external Without anchor")


class Service(NamedTuple):
    key: str            # the service URI as Request-URIs are compared (user@host)
    uri: str            # as written
    element: object     # the <service> element


def parse_rls_services(body: bytes, max_bytes: int) -> dict[str, Service]:
    """The services of a valid rls-services document by key, or
    InvalidDocument."""
    root = _parse(body, max_bytes, RLS_NS, "rls-services")
    services: dict[str, Service] = {}
    for element in root:
        if _ns(element) != RLS_NS or _local(element) != "service":
            continue
        uri = element.get("uri") or ""
        key = service_key(uri)
        if key is None:
            raise InvalidDocument("Service URI Not A SIP URI")
        if key in services:
            raise InvalidDocument("Service URI Not Unique", "uniqueness-failure")
        bodies = [c for c in element if _local(c) in ("resource-list", "list")]
        if len(bodies) != 1:
            raise InvalidDocument("Service Needs One resource-list Or list")
        if _local(bodies[0]) == "list":
            if _ns(bodies[0]) != RLS_NS and _ns(bodies[0]) != RL_NS:
                raise InvalidDocument("Service list In Wrong Namespace")
            _check_lists(bodies[0])
        elif not (bodies[0].text or "").strip():
            raise InvalidDocument("Empty resource-list")
        services[key] = Service(key, uri, element)
    return services


def service_key(uri: str) -> str | None:
    """user@host of a SIP URI (the host lower case, the user part
    %-decoded: RFC 4826 5's canonical form as far as lookup needs), or
    None when it is none."""
    try:
        return parsed_service_key(parse_uri(uri.strip()))
    except BadRequest:
        return None


def parsed_service_key(parsed) -> str | None:
    """service_key of a URI already parsed (a SUBSCRIBE's Request-URI)."""
    if parsed.scheme not in ("sip", "sips") or not parsed.user:
        return None
    return f"{parsed.user}@{parsed.host.lower()}"


def packages_of(service) -> set[str] | None:
    """The event packages a service allows (None: any, RFC 4826 4.1)."""
    for child in service.element:
        if _local(child) == "packages":
            return {(p.text or "").strip() for p in child if _local(p) == "package"}
    return None


# -- XCAP URIs and node selectors (RFC 4825 6) ------------------------------------------

_DOCUMENT = re.compile(r"^(?:.*/)?resource-lists/users/(?P<xui>[^/]+)/(?P<doc>[^/]+)$")
_STEP = re.compile(r"""(?:[A-Za-z_][\w.\-]*:)?(?P<name>[A-Za-z_][\w.\-]*)"""
                   r"""(?P<predicates>(?:\[(?:\d+|@[\w.\-:]+=(?:"[^"]*"|'[^']*'))\])*)""")
_PREDICATE = re.compile(r"""\[(?:(?P<pos>\d+)|@(?:[\w.\-]+:)?(?P<attr>[\w.\-]+)="""
                        r"""(?:"(?P<dq>[^"]*)"|'(?P<sq>[^']*)'))\]""")


def _split_steps(selector: str) -> list[str] | None:
    steps, i = [], 0
    while i < len(selector):
        m = _STEP.match(selector, i)
        if not m:
            return None
        steps.append(m.group(0))
        i = m.end()
        if i < len(selector):
            if selector[i] != "/":
                return None
            i += 1
    return steps


def _select(root, selector: str):
    """The one element a node selector (name, [n], [@attr="v"] steps)
    picks in the document, or None."""
    steps = _split_steps(selector)
    if not steps:
        return None
    current = None
    for step in steps:
        m = _STEP.fullmatch(step)
        name = m.group("name")
        candidates = [root] if current is None else [c for c in current if _local(c) == name]
        if current is None and _local(root) != name:
            return None
        for p in _PREDICATE.finditer(m.group("predicates")):
            if p.group("pos"):
                n = int(p.group("pos"))
                candidates = candidates[n - 1:n] if n >= 1 else []
            else:
                value = p.group("dq") if p.group("dq") is not None else p.group("sq")
                candidates = [c for c in candidates if c.get(p.group("attr")) == value]
        if len(candidates) != 1:
            return None
        current = candidates[0]
    return current


def _xui_owner(xui: str) -> str | None:
    scheme, colon, rest = xui.partition(":")
    if not colon or scheme.lower() not in ("sip", "sips"):
        return None
    user, at, domain = rest.partition("@")
    return f"{user}@{domain.lower()}" if at and user and domain else None


def reference(path: str) -> tuple[str, str, str] | None:
    """(owner, document name, node selector) of an XCAP URI or a path
    relative to the XCAP root, of a resource-lists document; None when it
    names none."""
    if "://" in path:
        parts = urllib.parse.urlsplit(path)
        if parts.scheme not in ("http", "https"):
            return None
        path = parts.path
    try:
        path = urllib.parse.unquote(path, errors="strict")
    except UnicodeDecodeError:
        return None
    document, sep, selector = path.partition("/~~/")
    m = _DOCUMENT.match(document)
    if not sep or not m:
        return None
    owner = _xui_owner(m.group("xui"))
    return (owner, m.group("doc"), selector) if owner else None


# -- flattening ---------------------------------------------------------------------------

Fetch = Callable[[], bytes | None]


class _Resolver:
    def __init__(self, owner: str, fetch: Fetch, max_bytes: int, max_depth: int,
                 max_members: int):
        self.owner = owner
        self.fetch = fetch
        self.max_bytes = max_bytes
        self.max_depth = max_depth
        self.max_members = max_members
        self._root = None
        self._fetched = False
        self.members: list[Member] = []
        self.seen: set[str] = set()
        self.skipped: list[str] = []

    def document(self, owner: str, name: str):
        """The owner's resource-lists document; None for another user's, a
        document other than index, or none."""
        if owner != self.owner or name != INDEX:
            return None
        if not self._fetched:
            self._fetched = True
            body = self.fetch()
            if body:
                try:
                    self._root = parse_resource_lists(body, self.max_bytes)
                except InvalidDocument:
                    self._root = None
        return self._root

    def target(self, path: str, kind: str):
        ref = reference(path)
        if ref is None:
            self.skipped.append(path)
            return None
        root = self.document(ref[0], ref[1])
        element = _select(root, ref[2]) if root is not None else None
        if element is None or _local(element) != kind:
            self.skipped.append(path)
            return None
        return element

    def add(self, uri: str, name: str) -> None:
        uri = uri.strip()
        if uri in self.seen:
            return
        scheme = uri.partition(":")[0].lower()
        if scheme not in SUBSCRIBABLE:
            return
        try:
            presentity = parse_uri(uri).aor
        except BadRequest:
            self.skipped.append(uri)
            return
        if len(uri) > 255 or len(presentity) > 255:
            self.skipped.append(uri)
            return
        if len(self.members) >= self.max_members:
            raise ListError("members", f"more than {self.max_members} members")
        self.seen.add(uri)
        self.members.append(Member(uri, presentity, name[:128]))

    def walk(self, element, depth: int, path: tuple[str, ...]) -> None:
        if depth > self.max_depth:
            raise ListError("depth", f"lists nested deeper than {self.max_depth}")
        here = _identity(element)
        if here in path:
            raise ListError("loop", "a list refers to itself")
        path = path + (here,)
        for child in element:
            kind = _local(child)
            if kind == "entry":
                self.add(child.get("uri") or "", _display_name(child))
            elif kind == "list":
                self.walk(child, depth + 1, path)
            elif kind == "entry-ref":
                entry = self.target(child.get("ref") or "", "entry")
                if entry is not None:
                    self.add(entry.get("uri") or "",
                             _display_name(child) or _display_name(entry))
            elif kind == "external":
                target = self.target(child.get("anchor") or "", "list")
                if target is not None:
                    self.walk(target, depth + 1, path)


def _identity(element) -> str:
    """Which list an element is, stable across lookups: its document
    (inline lists of rls-services have their own) and its path."""
    tree = element.getroottree()
    return f"{_local(tree.getroot())}:{tree.getpath(element)}"


def _display_name(element) -> str:
    for child in element:
        if _local(child) == "display-name":
            return (child.text or "").strip()
    return ""


def resolve_service(service: Service, owner: str, fetch: Fetch, max_bytes: int,
                    max_depth: int, max_members: int) -> tuple[list[Member], list[str]]:
    """The members of a service, flattened, and the references that could
    not be resolved (skipped: RFC 4826 4.5 allows serving the rest); a
    loop, too deep a nesting or too many members is a ListError."""
    resolver = _Resolver(owner, fetch, max_bytes, max_depth, max_members)
    for child in service.element:
        kind = _local(child)
        if kind == "list":
            resolver.walk(child, 1, ())
        elif kind == "resource-list":
            target = resolver.target((child.text or "").strip(), "list")
            if target is not None:
                resolver.walk(target, 1, ())
    return resolver.members, resolver.skipped


def check_resource_lists(root, owner: str, max_bytes: int, max_depth: int,
                         max_members: int) -> None:
    """ListError when some list of a new resource-lists document loops
    through its references or nests too deep (its members are not limited
    here: a list is only too long for the services that serve it)."""
    resolver = _Resolver(owner, lambda: None, max_bytes, max_depth, 1 << 30)
    resolver._root, resolver._fetched = root, True
    for child in root:
        if _local(child) == "list":
            resolver.walk(child, 1, ())
            resolver.members, resolver.seen = [], set()


def adhoc_members(body: bytes, max_bytes: int, max_depth: int,
                  max_members: int) -> list[Member]:
    """The members of a request-contained list (RFC 5367: a flat
    resource-lists document; nested lists are flattened, references are
    not followed), or InvalidDocument / ListError."""
    root = parse_resource_lists(body, max_bytes)
    resolver = _Resolver("", lambda: None, max_bytes, max_depth, max_members)
    for child in root:
        if _local(child) == "list":
            for grandchild in child.iter():
                if _local(grandchild) == "entry":
                    resolver.add(grandchild.get("uri") or "", _display_name(grandchild))
    return resolver.members


def service_document(services: list[bytes]) -> bytes:
    """The global rls-services index (RFC 4826 4.4.9): the union of every
    user's services."""
    from lxml import etree
    root = etree.Element(f"{{{RLS_NS}}}rls-services", nsmap={None: RLS_NS})
    for body in services:
        try:
            doc = xmlsafe.parse(body, len(body) + 1)
        except xmlsafe.UnsafeXml:
            continue
        for service in doc:
            if _local(service) == "service":
                root.append(service)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")
