"""Who may watch whom: the `auth` and `winfo_auth` settings.

auth none      every watcher is active and sees everything.
auth implicit  a new watcher is pending until the presentity decides
               (its decision is kept in pa_watcher); a presentity may
               always watch itself.
auth xcap      the presentity's pres-rules document decides (RFC 5025):
               from the built-in XCAP server (documents in the database)
               or, when pa_domain names one, an external XCAP server whose
               documents are cached with their entity-tags and fetched
               again after auth_rules_refresh_time.

A failure to learn the rules never lets a watcher in: without rules the
answer is pending (RFC 5025 confirm).
"""

from __future__ import annotations

import dataclasses
import logging
import re
import urllib.parse

from . import presrules
from .clock import Clock
from .config import Settings
from .packages import PRESENCE, EventPackage
from .packages import Authorization as PackageAuthorization
from .records import ACTIVE, PENDING, TERMINATED, XcapDocument
from .store import Decisions
from .xcap_client import XcapClient, XcapUnavailable

log = logging.getLogger("pa.authorization")

# A decision (pa_watcher.status) besides the subscription states: the
# watcher looks active and is shown nothing (RFC 5025 3.2.1).
POLITE_BLOCK = "polite-block"

PRES_RULES = "pres-rules"


@dataclasses.dataclass(frozen=True)
class Authorization:
    status: str
    reason: str = ""
    permissions: int = presrules.EVERYTHING


ACTIVE_ALL = Authorization(ACTIVE)
WAIT = Authorization(PENDING)
REJECTED = Authorization(TERMINATED, "rejected", presrules.NOTHING)


# What a user or domain named in an XCAP path may not hold once decoded:
# control characters and white space (they would reach HTTP headers and
# logs), '"' (the end of the realm's quoted string) and '/' (another path).
_UNFIT = re.compile(r'[\x00-\x20\x7f"/]')
# pchar of RFC 3986 besides unreserved: kept as they are in a path segment.
_SEGMENT_SAFE = "!$&'()*+,;=:@"


def fits_xcap_path(name: str) -> bool:
    """Whether a decoded user or domain may name an XCAP document."""
    return bool(name) and not _UNFIT.search(name) and not any(c.isspace() for c in name)


def document_path(template: str, presentity: str) -> str | None:
    """Where a presentity's pres-rules live on an XCAP server: the template
    with {xui} (sip:user@domain), {user} and {domain} filled in, each
    %-encoded on its own so that it stays one path segment; None for a
    presentity whose name cannot be one."""
    user, _, domain = presentity.rpartition("@")
    if not (fits_xcap_path(user) and fits_xcap_path(domain)):
        return None

    def segment(text: str) -> str:
        return urllib.parse.quote(text, safe=_SEGMENT_SAFE)
    return template.format(xui=segment("sip:" + presentity), user=segment(user),
                           domain=segment(domain))


def path_pattern(template: str) -> re.Pattern:
    """A regular expression matching the template's paths, capturing the
    placeholders."""
    pattern, last = "", 0
    for m in re.finditer(r"\{(xui|user|domain)\}", template):
        pattern += re.escape(template[last:m.start()]) + f"(?P<{m.group(1)}>[^/]+)"
        last = m.end()
    return re.compile("^" + pattern + re.escape(template[last:]) + "$")


def owner_of(match: re.Match) -> str | None:
    """The presentity (user@domain) a path matched by path_pattern names,
    or None when it names none we could serve."""
    try:
        fields = {k: urllib.parse.unquote(v, errors="strict")
                  for k, v in match.groupdict().items()}
    except UnicodeDecodeError:
        return None
    if "xui" in fields:
        scheme, colon, rest = fields["xui"].partition(":")
        if not colon or scheme.lower() not in ("sip", "sips"):
            return None
        user, _, domain = rest.partition("@")
    else:
        user, domain = fields.get("user", ""), fields.get("domain", "")
    if not (fits_xcap_path(user) and fits_xcap_path(domain)):
        return None
    return f"{user}@{domain.lower()}"


class Authorizer:
    def __init__(self, settings: Settings, decisions: Decisions, clock: Clock):
        self.settings = settings
        self.decisions = decisions
        self.clock = clock
        self.client = XcapClient(settings.pa_domain, settings.xcap_timeout) \
            if settings.pa_domain else None

    def authorize(self, package: EventPackage, domain: str, presentity: str,
                  watcher: str) -> Authorization:
        """May `watcher` subscribe to `package` of `presentity`, and what
        may it see: as the package says authorization applies."""
        if package.authorization is PackageAuthorization.OWNER:
            return self.owner(presentity, watcher)
        if package.authorization is PackageAuthorization.SELF:
            # reg (RFC 3680 4.6): a user watches its own registrations.
            if self.settings.auth == "none" or watcher == presentity:
                return ACTIVE_ALL
            return REJECTED
        return self.by_policy(package.name, domain, presentity, watcher,
                              rules=package.authorization is PackageAuthorization.RULES)

    def by_policy(self, event: str, domain: str, presentity: str,
                  watcher: str, rules: bool = True) -> Authorization:
        """The `auth` setting: everyone, the presentity's decisions (kept
        per event package), or its pres-rules (presence only: the other
        packages follow the presentity's decisions under auth xcap too)."""
        s = self.settings
        if s.auth == "none" or watcher == presentity:
            return ACTIVE_ALL
        if s.auth == "implicit" or not rules:
            decided = self.decisions.of(domain, event, presentity, watcher)
            if decided is None or decided.status == PENDING:
                return WAIT
            if decided.status == ACTIVE:
                return ACTIVE_ALL
            if decided.status == POLITE_BLOCK:
                return Authorization(ACTIVE, permissions=presrules.NOTHING)
            return Authorization(TERMINATED, decided.reason or "rejected", presrules.NOTHING)
        return self.by_rules(presentity, watcher, self.rules_of(presentity))

    def by_rules(self, presentity: str, watcher: str, body: bytes | None) -> Authorization:
        if not body:
            return WAIT
        try:
            rules = presrules.parse_rules(body)
        except presrules.InvalidRules as e:
            log.warning("pres-rules of %s unusable (%s): watchers wait", presentity, e.reason)
            return WAIT
        decision = presrules.evaluate(rules, watcher, self.clock())
        if decision.sub_handling == presrules.ALLOW:
            return Authorization(ACTIVE, permissions=decision.permissions)
        if decision.sub_handling == presrules.POLITE_BLOCK:
            return Authorization(ACTIVE, permissions=presrules.NOTHING)
        if decision.sub_handling == presrules.BLOCK:
            return REJECTED
        return WAIT

    def owner(self, presentity: str, watcher: str) -> Authorization:
        """Watcher information: the presentity only (winfo_auth implicit)."""
        if self.settings.winfo_auth == "none" or watcher == presentity:
            return ACTIVE_ALL
        return REJECTED

    # -- the rules documents ----------------------------------------------

    def rules_of(self, presentity: str) -> bytes | None:
        """The presentity's pres-rules document, b"" or None when it has none."""
        cached = self.decisions.xcap_document(presentity, PRES_RULES)
        if self.client is None:
            return cached.body if cached else None
        if cached and self.clock() - cached.fetched_at < self.settings.auth_rules_refresh_time:
            return cached.body
        return self._fetch(presentity, cached)

    def _fetch(self, presentity: str, cached: XcapDocument | None) -> bytes | None:
        now = self.clock.now()
        path = document_path(self.settings.xcap_document_path, presentity)
        if path is None:
            # A name that would leave its path segment ('/', control
            # characters): never asked for, so its watchers wait.
            log.info("pres-rules of %r not fetched: the name cannot be an XCAP path",
                     presentity)
            return cached.body if cached else None
        try:
            fetched = self.client.fetch(path, cached.etag if cached else "")
        except XcapUnavailable as e:
            # The last rules the presentity gave still stand; without any,
            # its watchers wait, and an empty copy dated long ago makes the
            # timer try again.
            log.warning("pres-rules of %s not fetched: %s", presentity, e)
            if cached:
                return cached.body
            self.decisions.save_xcap_document(presentity, PRES_RULES, "", b"", 0)
            return None
        if fetched.status == 304 and cached:
            self.decisions.touch_xcap_document(presentity, PRES_RULES, now)
            return cached.body
        body = fetched.body if fetched.status == 200 else b""
        self.decisions.save_xcap_document(presentity, PRES_RULES, fetched.etag, body, now)
        return body

    def refresh_stale_rules(self, limit: int = 50) -> list[str]:
        """Fetch again the rules of watched presentities whose copy is older
        than auth_rules_refresh_time; returns those whose rules changed."""
        if self.client is None or self.settings.auth != "xcap":
            return []
        before = self.clock.now() - self.settings.auth_rules_refresh_time
        changed = []
        for presentity in self.decisions.stale_rule_owners(PRES_RULES, PRESENCE.name, before,
                                                           limit):
            cached = self.decisions.xcap_document(presentity, PRES_RULES)
            old = cached.body if cached else b""
            if (self._fetch(presentity, cached) or b"") != (old or b""):
                changed.append(presentity)
        return changed
