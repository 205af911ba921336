"""The built-in XCAP server (RFC 4825, whole documents): each user keeps
its pres-rules document here, so no separate XCAP product is needed.

GET, PUT and DELETE of `xcap_document_path` (by default
/xcap-root/pres-rules/users/sip:alice@example.com/index), with entity-tags
and conditional requests (If-Match, If-None-Match).  Only the owner may
read or change its rules: with xcap_auth 'digest' the request must prove
the owner's SIP credentials (Kamailio's subscriber table); 'none' trusts
everyone (only for networks where something in front authenticates).

A change re-evaluates at once every watcher of the owner.

The resource list server's documents (RFC 4826) live here too, with the
same authentication, each user's own:
    /xcap-root/resource-lists/users/{xui}/index   its lists
    /xcap-root/rls-services/users/{xui}/index     its list URIs
    /xcap-root/rls-services/global/index          the union (GET only;
                                                  only with xcap_auth none)
A change takes effect at once on the owner's live list subscriptions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
import secrets
from typing import Callable

from . import presrules, resource_lists
from .authorization import PRES_RULES, owner_of, path_pattern
from .config import Settings
from .digest import Digest, WrongTarget
from .messages import Notify
from .resource_lists import RESOURCE_LISTS, RLS_SERVICES, InvalidDocument, ListError
from .store import Decisions, Lists

log = logging.getLogger("pa.xcap")

XCAP_ERROR = "application/xcap-error+xml"
ERROR_NS = "urn:ietf:params:xml:ns:xcap-error"
# pa_secret's name of the secret signing digest nonces.
NONCE_SECRET = "xcap_nonce"
# A request-target as RFC 3986 allows it: visible ASCII, nothing else.
_REQUEST_TARGET = re.compile(r"[\x21-\x7e]+")
# The resource list server's documents (RFC 4826 3.4.8, 4.4.8).
LIST_PATHS = {
    RESOURCE_LISTS: path_pattern("/xcap-root/resource-lists/users/{xui}/index"),
    RLS_SERVICES: path_pattern("/xcap-root/rls-services/users/{xui}/index"),
}
GLOBAL_SERVICES = "/xcap-root/rls-services/global/index"
CONTENT_TYPES = {PRES_RULES: presrules.CONTENT_TYPE, RESOURCE_LISTS: resource_lists.RL_TYPE,
                 RLS_SERVICES: resource_lists.RLS_TYPE}
# At most so many users' services in the global index.
GLOBAL_LIMIT = 10000


@dataclasses.dataclass(frozen=True)
class HttpRequest:
    method: str
    path: str
    headers: dict[str, str]    # lower-case names
    body: bytes = b""


@dataclasses.dataclass(frozen=True)
class HttpReply:
    code: int
    reason: str
    content_type: str = ""
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()


def _error(code: int, reason: str, *headers: tuple[str, str]) -> HttpReply:
    return HttpReply(code, reason, headers=headers)


def _conflict(condition: str, inner: str = "", phrase: str = "") -> HttpReply:
    attr = f' phrase="{phrase}"' if phrase else ""
    element = f"<{condition}{attr}>{inner}</{condition}>" if inner else f"<{condition}{attr}/>"
    body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<xcap-error xmlns="{ERROR_NS}">'
            f"{element}</xcap-error>\n").encode()
    return HttpReply(409, "Conflict", XCAP_ERROR, body)


def _etags(value: str | None) -> set[str]:
    return {t.strip().strip('"') for t in (value or "").split(",") if t.strip()}


def _allowed(headers: dict[str, str]):
    """The If-Match / If-None-Match precondition as a test of the current
    entity-tag (None: no document)."""
    if_match, if_none_match = _etags(headers.get("if-match")), _etags(headers.get("if-none-match"))

    def allowed(current: str | None) -> bool:
        if if_match and (current is None or not ("*" in if_match or current in if_match)):
            return False
        if if_none_match and current is not None and ("*" in if_none_match
                                                      or current in if_none_match):
            return False
        return True
    return allowed


class XcapServer:
    def __init__(self, settings: Settings, decisions: Decisions, clock: Callable[[], float],
                 reauthorize: Callable[[str], list[Notify]], lists: Lists,
                 lists_changed: Callable[[str], list[Notify]]):
        self.settings = settings
        self.decisions = decisions
        self.lists = lists
        self.lists_changed = lists_changed
        self.clock = clock
        self.reauthorize = reauthorize
        self.pattern = path_pattern(settings.xcap_document_path)
        self._digest: Digest | None = None

    @property
    def digest(self) -> Digest:
        # Nonces are signed with xcap_nonce_secret, or else with a random
        # secret the first node created in the database: never one derived
        # from a credential, for every 401 would test guesses of it offline.
        if self._digest is None:
            secret = self.settings.xcap_nonce_secret or self.decisions.shared_secret(
                NONCE_SECRET, secrets.token_hex(32))
            self._digest = Digest(hashlib.sha256(secret.encode()).digest())
        return self._digest

    def handle(self, req: HttpRequest) -> tuple[HttpReply, list[Notify]]:
        if not _REQUEST_TARGET.fullmatch(req.path):
            return _error(400, "Bad Request"), []
        path = req.path.partition("?")[0]
        if path == GLOBAL_SERVICES:
            return self._global(req), []
        auid, match = PRES_RULES, self.pattern.match(path)
        for name, pattern in LIST_PATHS.items():
            if match is None:
                auid, match = name, pattern.match(path)
        owner = owner_of(match) if match else None
        if owner is None:
            return _error(404, "Not Found"), []
        if req.method not in ("GET", "PUT", "DELETE"):
            return _error(405, "Method Not Allowed", ("Allow", "GET, PUT, DELETE")), []
        denied = self._authenticate(req, owner)
        if denied is not None:
            return denied, []
        if req.method == "GET":
            return self._get(req, owner, auid), []
        if req.method == "PUT":
            if auid != PRES_RULES:
                return self._put_list(req, owner, auid)
            return self._put(req, owner)
        return self._delete(req, owner, auid)

    def _authenticate(self, req: HttpRequest, owner: str) -> HttpReply | None:
        if self.settings.xcap_auth == "none":
            return None
        realm = owner.rpartition("@")[2]
        try:
            user, stale = self.digest.verify(req.headers.get("authorization"), req.method,
                                             req.path, realm, self.decisions.ha1, self.clock(),
                                             self._first_use)
        except WrongTarget:
            return _error(400, "Bad Request")
        if user is None:
            return _error(401, "Unauthorized",
                          ("WWW-Authenticate", self.digest.challenge(realm, self.clock(), stale)))
        if f"{user}@{realm}" != owner:
            log.info("XCAP %s of %s refused to %s@%s", req.method, owner, user, realm)
            return _error(403, "Forbidden")
        return None

    def _first_use(self, nonce: str, nc: int, expiry: int) -> bool:
        return self.decisions.first_nonce_use(nonce, nc, expiry, int(self.clock()))

    def _global(self, req: HttpRequest) -> HttpReply:
        """The read-only union of every user's services (RFC 4826 4.4.9):
        only trusted RLSs may read it, and this one reads the users'
        documents itself, so over HTTP only without authentication."""
        if req.method != "GET":
            return _error(405, "Method Not Allowed", ("Allow", "GET"))
        if self.settings.xcap_auth != "none":
            return _error(403, "Forbidden")
        body = resource_lists.service_document(self.lists.all_documents(RLS_SERVICES,
                                                                        GLOBAL_LIMIT))
        return HttpReply(200, "OK", resource_lists.RLS_TYPE, body)

    def _get(self, req: HttpRequest, owner: str, auid: str = PRES_RULES) -> HttpReply:
        doc = self.decisions.xcap_document(owner, auid)
        if doc is None or not doc.body:
            return _error(404, "Not Found")
        etag, body = doc.etag, doc.body
        if etag in _etags(req.headers.get("if-none-match")):
            return _error(304, "Not Modified", ("ETag", f'"{etag}"'))
        return HttpReply(200, "OK", CONTENT_TYPES[auid], body, (("ETag", f'"{etag}"'),))

    def _put(self, req: HttpRequest, owner: str) -> tuple[HttpReply, list[Notify]]:
        media = req.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media != presrules.CONTENT_TYPE:
            return _error(415, "Unsupported Media Type"), []
        try:
            presrules.parse_rules(req.body)
        except presrules.InvalidRules as e:
            if e.too_large:
                return _error(413, "Request Entity Too Large"), []
            well_formed = e.reason not in ("Document Not Well-Formed", "Document Not UTF-8",
                                           "DTD Not Allowed")
            return _conflict("schema-validation-error" if well_formed else "not-well-formed"), []
        etag = secrets.token_urlsafe(12)
        result = self.decisions.write_xcap_document(owner, PRES_RULES, req.body, etag,
                                                _allowed(req.headers), int(self.clock()))
        if result == "precondition":
            return _error(412, "Precondition Failed"), []
        log.info("XCAP pres-rules of %s %s", owner, result)
        reply = HttpReply(201 if result == "created" else 200,
                          "Created" if result == "created" else "OK",
                          headers=(("ETag", f'"{etag}"'),))
        return reply, self.reauthorize(owner)

    def _put_list(self, req: HttpRequest, owner: str,
                  auid: str) -> tuple[HttpReply, list[Notify]]:
        """PUT of a resource-lists or rls-services document: valid, free of
        loops, each list within the limits, each service URI nobody else
        claims (RFC 4826 4.4.5: 409)."""
        s = self.settings
        media = req.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media != CONTENT_TYPES[auid]:
            return _error(415, "Unsupported Media Type"), []
        keys: list[str] = []
        try:
            if auid == RESOURCE_LISTS:
                root = resource_lists.parse_resource_lists(req.body, s.rls_max_document_bytes)
                resource_lists.check_resource_lists(root, owner, s.rls_max_document_bytes,
                                                    s.rls_max_depth, s.rls_max_members)
                # The owner's services as they would be with the new lists.
                stored = self.decisions.xcap_document(owner, RLS_SERVICES)
                services = resource_lists.parse_rls_services(
                    stored.body, s.rls_max_document_bytes) if stored and stored.body else {}
                lists_body = req.body
            else:
                services = resource_lists.parse_rls_services(req.body, s.rls_max_document_bytes)
                keys = list(services)
                stored = self.decisions.xcap_document(owner, RESOURCE_LISTS)
                lists_body = stored.body if stored else None
            for service in services.values():
                resource_lists.resolve_service(
                    service, owner, lambda: lists_body, s.rls_max_document_bytes,
                    s.rls_max_depth, s.rls_max_members)
        except InvalidDocument as e:
            if e.too_large:
                return _error(413, "Request Entity Too Large"), []
            return _conflict(e.condition, phrase=e.reason), []
        except ListError as e:
            return _conflict("constraint-failure", phrase=e.detail), []
        etag = secrets.token_urlsafe(12)
        now = int(self.clock())
        if auid == RLS_SERVICES:
            result = self.lists.write_services(owner, auid, req.body, etag, keys,
                                               _allowed(req.headers), now)
        else:
            result = self.decisions.write_xcap_document(owner, auid, req.body, etag,
                                                        _allowed(req.headers), now)
        if result == "precondition":
            return _error(412, "Precondition Failed"), []
        if result.startswith("conflict"):
            taken = result.partition(" ")[2]
            return _conflict("uniqueness-failure",
                             f'<exists field="rls-services/service/@uri"/>',
                             phrase=f"sip:{taken} belongs to another user"), []
        log.info("XCAP %s of %s %s", auid, owner, result)
        reply = HttpReply(201 if result == "created" else 200,
                          "Created" if result == "created" else "OK",
                          headers=(("ETag", f'"{etag}"'),))
        return reply, self.lists_changed(owner)

    def _delete(self, req: HttpRequest, owner: str,
                auid: str = PRES_RULES) -> tuple[HttpReply, list[Notify]]:
        if auid == RLS_SERVICES:
            result = self.lists.write_services(owner, auid, None, "", [],
                                               _allowed(req.headers), int(self.clock()))
        else:
            result = self.decisions.write_xcap_document(owner, auid, None, "",
                                                        _allowed(req.headers), int(self.clock()))
        if result == "precondition":
            return _error(412, "Precondition Failed"), []
        if result == "missing":
            return _error(404, "Not Found"), []
        log.info("XCAP %s of %s deleted", auid, owner)
        if auid != PRES_RULES:
            return HttpReply(200, "OK"), self.lists_changed(owner)
        return HttpReply(200, "OK"), self.reauthorize(owner)
