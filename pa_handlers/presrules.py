"""Presence authorization rules: RFC 5025 pres-rules on RFC 4745
common-policy.

A ruleset is a list of rules; a rule applies to a watcher when all its
conditions hold (identity, validity; a condition we do not understand never
holds, RFC 4745 10).  The sub-handling actions of the applicable rules
combine by taking the most permissive ("max wins": block < confirm <
polite-block < allow); no applicable sub-handling means confirm.  The
transformations combine by union: what the watcher may see of the
presentity's services (tuples), persons and devices.
"""

from __future__ import annotations

import dataclasses
import datetime

from . import cache, xmlsafe
from .sip import BadRequest, parse_uri

CP_NS = "urn:ietf:params:xml:ns:common-policy"
PR_NS = "urn:ietf:params:xml:ns:pres-rules"
CONTENT_TYPE = "application/auth-policy+xml"
MAX_DOCUMENT_BYTES = 64 * 1024

BLOCK, CONFIRM, POLITE_BLOCK, ALLOW = "block", "confirm", "polite-block", "allow"
_RANK = {BLOCK: 0, CONFIRM: 10, POLITE_BLOCK: 20, ALLOW: 30}

# What a watcher may see (a bit each): <tuple> elements and presentity
# notes, <dm:person> elements, <dm:device> elements.
SERVICES, PERSONS, DEVICES = 1, 2, 4
EVERYTHING = SERVICES | PERSONS | DEVICES
NOTHING = 0

_PROVIDE = {"provide-services": ("all-services", SERVICES),
            "provide-persons": ("all-persons", PERSONS),
            "provide-devices": ("all-devices", DEVICES)}


class InvalidRules(Exception):
    def __init__(self, reason: str, too_large: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.too_large = too_large


def _cp(name: str) -> str:
    return f"{{{CP_NS}}}{name}"


def _pr(name: str) -> str:
    return f"{{{PR_NS}}}{name}"


@dataclasses.dataclass(frozen=True)
class Many:
    domain: str                 # "" matches any identity
    except_ids: frozenset[str]
    except_domains: frozenset[str]

    def matches(self, aor: str) -> bool:
        domain = aor.rpartition("@")[2]
        if self.domain and domain != self.domain:
            return False
        return aor not in self.except_ids and domain not in self.except_domains


@dataclasses.dataclass(frozen=True)
class Rule:
    id: str
    ids: frozenset[str] | None          # None: no identity condition
    many: tuple[Many, ...]
    validity: tuple[tuple[datetime.datetime, datetime.datetime], ...] | None
    understood: bool                    # False: has a condition we do not know
    sub_handling: str | None
    permissions: int

    def applies(self, watcher: str, now: datetime.datetime) -> bool:
        if not self.understood:
            return False
        if self.ids is not None and watcher not in self.ids \
                and not any(m.matches(watcher) for m in self.many):
            return False
        if self.validity is not None and not any(start <= now < end
                                                 for start, end in self.validity):
            return False
        return True


@dataclasses.dataclass(frozen=True)
class Decision:
    sub_handling: str
    permissions: int


def _aor(uri: str) -> str:
    try:
        return parse_uri(uri.strip()).aor
    except BadRequest:
        return uri.strip().lower()


def _time(text: str | None) -> datetime.datetime:
    value = datetime.datetime.fromisoformat((text or "").strip().replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.timezone.utc)
    return value


def _rule(element) -> Rule:
    ids: set[str] | None = None
    many: list[Many] = []
    validity = None
    understood = True
    conditions = element.find(_cp("conditions"))
    for condition in (conditions if conditions is not None else ()):
        if condition.tag == _cp("identity"):
            ids = ids if ids is not None else set()
            for child in condition:
                if child.tag == _cp("one") and child.get("id"):
                    ids.add(_aor(child.get("id")))
                elif child.tag == _cp("many"):
                    many.append(Many(
                        (child.get("domain") or "").lower(),
                        frozenset(_aor(e.get("id")) for e in child.iter(_cp("except"))
                                  if e.get("id")),
                        frozenset(e.get("domain").lower() for e in child.iter(_cp("except"))
                                  if e.get("domain"))))
        elif condition.tag == _cp("validity"):
            try:
                validity = tuple((_time(f.text), _time(u.text)) for f, u in
                                 zip(condition.iter(_cp("from")), condition.iter(_cp("until"))))
            except ValueError:
                understood = False
        else:
            understood = False  # sphere, or an extension we do not know
    sub_handling = None
    actions = element.find(_cp("actions"))
    if actions is not None:
        text = actions.findtext(_pr("sub-handling"))
        if text is not None:
            sub_handling = text.strip()
            if sub_handling not in _RANK:
                raise InvalidRules("Unknown sub-handling")
    permissions = NOTHING
    transformations = element.find(_cp("transformations"))
    if transformations is not None:
        for name, (everything, bit) in _PROVIDE.items():
            provide = transformations.find(_pr(name))
            # "All or none": a provide element listing particular items
            # grants nothing here.
            if provide is not None and provide.find(_pr(everything)) is not None:
                permissions |= bit
    return Rule(element.get("id", ""), frozenset(ids) if ids is not None else None,
                tuple(many), validity, understood, sub_handling, permissions)


def parse_rules(body: bytes) -> tuple[Rule, ...]:
    """The rules of a pres-rules document (cached by digest: one parse per
    version)."""
    return cache.DOCUMENTS.get(("pres-rules", cache.digest(body)), lambda: _parse_rules(body))


def _parse_rules(body: bytes) -> tuple[Rule, ...]:
    try:
        root = xmlsafe.parse(body, MAX_DOCUMENT_BYTES)
    except xmlsafe.UnsafeXml as e:
        raise InvalidRules(e.reason, e.too_large) from None
    if root.tag != _cp("ruleset"):
        raise InvalidRules("Not A Common-Policy Ruleset")
    return tuple(_rule(rule) for rule in root.iterfind(_cp("rule")))


def evaluate(rules: tuple[Rule, ...], watcher: str, now: float) -> Decision:
    """What the rules say about `watcher` (an AOR, user@host) at `now`."""
    moment = datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
    handling, permissions = None, NOTHING
    for rule in rules:
        if rule.applies(watcher, moment):
            if rule.sub_handling is not None and (
                    handling is None or _RANK[rule.sub_handling] > _RANK[handling]):
                handling = rule.sub_handling
            permissions |= rule.permissions
    return Decision(handling or CONFIRM, permissions)
