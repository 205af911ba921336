"""Carrying Kamailio's native presence state over: pa-admin import-native.

An operator who replaces Kamailio's own presence module (presence +
presence_xml) by this plugin should not need every phone to subscribe and
publish again.  The native module keeps its state in three tables (schema
of Kamailio 5.x): `presentity` (publications), `active_watchers`
(subscriptions, with their dialogs) and `watchers` (authorization
decisions).  Their live rows become ours:

* a presentity row of event presence, dialog or message-summary: a publication with the same
  entity-tag and expiry, its body parsed as our PUBLISH path parses it, and
  the presentity's document composed as after a PUBLISH, so that the
  device's next PUBLISH with SIP-If-Match refreshes it;
* an active_watchers row of any package we serve: a subscription in
  the same dialog (native was the notifier: its to_tag is our local tag),
  whose next NOTIFY carries a higher CSeq than native's last;
* a watchers row: the presentity's decision about the watcher, where we
  have none.

Run it with native Kamailio stopped (in its default write-back mode the
module writes its subscriptions to active_watchers when it stops) and start
ours on the same address: the imported dialogs name the socket native
received them on.  What was imported already is skipped, so a second run
adds nothing.  Errors worded for the operator: NativeImportError (a
ValueError) when the tables are not the native module's, ConfigError for a
malformed --from-url, StoreUnavailable when a database cannot be reached.
"""

from __future__ import annotations

import collections
import logging

from . import presrules
from .authorization import ACTIVE_ALL, POLITE_BLOCK, WAIT, Authorization, Authorizer
from .clock import Clock
from .compositor import Compositor
from .config import ConfigError, Settings, parse_db_url
from .packages import PACKAGES, Authorization as PackageAuthorization, publishable
from .records import ACTIVE, PENDING, TERMINATED, DocumentKey, Subscription
from .rfc6665 import check_event_id, route_set_of
from .sip import (BadRequest, check_call_id, check_tag, is_token, parse_uri,
                  split_list)
from .store import Database, ImportedDecision, ImportedPublication, Store

log = logging.getLogger("pa.import")

# Status codes of the native module (presence/subscribe.h).  WAITING is a
# watcher still to be decided; POLITE_BLOCK, active showing nothing.
NATIVE_ACTIVE, NATIVE_PENDING, NATIVE_TERMINATED, NATIVE_WAITING, NATIVE_POLITE_BLOCK = 1, 2, 3, 4, 5

# Source of an imported publication: the native row it came from.  Its
# device is unknown (native keeps no Contact), and a source that names the
# row lets a second run recognise it after a refresh changed its entity-tag.
NATIVE_SOURCE = "native:"


class NativeImportError(ValueError):
    """The native tables cannot be imported; worded for the operator."""


class _Skip(Exception):
    """A native row we cannot carry over; the reason is logged, not fatal."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def import_native(store: Store, settings: Settings, from_url: str | None, domain: str,
                  now: int) -> dict:
    """Import the live native presence state of the database at `from_url`
    (default: ours) into presence domain `domain`; returns how many rows of
    each kind were imported, skipped, and found already present."""
    source = _native_store(store, settings, from_url)
    try:
        _check_tables(source)
        publications = source.native.publications(now)
        subscriptions = source.native.subscriptions(now)
        decisions = source.native.decisions()
    finally:
        if source is not store:
            source.db.discard()
    skipped: collections.Counter = collections.Counter()
    clock = Clock(lambda: now)
    authorizer = Authorizer(settings, store.decisions, clock)
    publications = _convert("presentity", publications, skipped,
                            lambda row: _publication(row, domain, settings),
                            lambda p: [("etag", p.etag), ("source", p.source)])
    subscriptions = _convert("active_watchers", subscriptions, skipped,
                             lambda row: _subscription(row, domain, settings, authorizer),
                             lambda s: [s.dialog])
    decisions = _convert("watchers", decisions, skipped,
                         lambda row: _decision(row, domain),
                         lambda d: [(d.presentity, d.watcher, d.presence_domain, d.event)])
    # The compositor composes the documents; pa-admin cannot send SIP, so
    # the import leaves fan-out tasks for Kamailio instead of fanning out.
    compositor = Compositor(settings, store.documents, clock, lambda key: [])
    counts = store.native.import_state(
        publications, subscriptions, decisions, now, compositor.composer_of,
        lambda sub: sub.status == ACTIVE and PACKAGES[sub.event].composed)
    for (table, reason), n in sorted(skipped.items()):
        log.warning("%d %s row(s) not imported: %s", n, table, reason)
    return {"publications": counts["publications"], "subscriptions": counts["subscriptions"],
            "decisions": counts["decisions"], "skipped": sum(skipped.values()),
            "already present": counts["already present"]}


def _native_store(store: Store, settings: Settings, from_url: str | None) -> Store:
    if not from_url:
        return store
    try:
        url = parse_db_url(from_url)
    except ConfigError as e:
        raise ConfigError("--from-url is not a database URL such as"
                          f" mysql://user:pass@host:3306/db ({e})") from None
    return Store(Database(url, settings.db_timeout))


def _check_tables(source: Store) -> None:
    missing = source.native.missing()
    if not missing:
        return
    where = source.db.url.redacted()
    tables = [m for m in missing if "." not in m]
    if tables:
        raise NativeImportError(
            f"{where} has no table {', '.join(tables)} of Kamailio's presence module:"
            " give --from-url the database of the presence module's db_url")
    raise NativeImportError(
        f"the presence tables of {where} lack {', '.join(missing)}: not the schema of"
        " Kamailio 5.x's presence module")


def _convert(table: str, rows: list[dict], skipped: collections.Counter, convert,
             identities) -> list:
    """Convert each row, counting the rows skipped by reason; of rows that
    convert to the same identity (entity-tag, dialog, decision), the first
    wins."""
    converted, seen = [], set()
    for row in rows:
        try:
            value = convert(row)
        except _Skip as e:
            skipped[(table, e.reason)] += 1
            continue
        except BadRequest as e:
            skipped[(table, f"malformed value ({e.reason})")] += 1
            continue
        keys = [tuple(k) for k in identities(value)]
        if any(k in seen for k in keys):
            skipped[(table, "duplicate of another row")] += 1
            continue
        seen.update(keys)
        converted.append(value)
    return converted


def _aor(user: str, host: str) -> str:
    """user@host as our code compares addresses (host lower-cased)."""
    aor = parse_uri(f"sip:{user}@{host}" if user else f"sip:{host}").aor
    return _fits(aor, 255)


def _fits(value: str, limit: int) -> str:
    if len(value) > limit:
        raise _Skip(f"a value longer than our column ({limit} characters)")
    return value


def _text(value) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, (bytes, bytearray)) else str(value)


# -- publications -------------------------------------------------------------

def _publication(row: dict, domain: str, settings: Settings) -> ImportedPublication:
    """Our publication of a live presentity row."""
    event = _text(row["event"])
    pkg = publishable().get(event)
    if pkg is None:
        raise _Skip(f"event {event!r} (not a package anyone publishes here)")
    presentity = _aor(_text(row["username"]), _text(row["domain"]))
    etag = _text(row["etag"])
    # What the compositor accepts in SIP-If-Match; anything else would 412.
    if len(etag) > 64 or not is_token(etag):
        raise _Skip("entity-tag longer than 64 characters or not a token")
    body = row["body"]
    if isinstance(body, str):
        body = body.encode("utf-8")
    try:
        parts = pkg.documents.parse(bytes(body or b""), settings)
    except pkg.documents.InvalidDocument as e:
        raise _Skip(f"body not an acceptable {pkg.documents.kind} document ({e.reason})") \
            from None
    source = _fits(NATIVE_SOURCE + (_text(row["ruid"]) or etag), 512)
    return ImportedPublication(
        DocumentKey(presentity, domain, event), etag, source,
        _fits(_publisher(row, presentity), 255), pkg.publish_types[0], parts,
        int(row["expires"]), int(row["received_time"]))


def _publisher(row: dict, presentity: str) -> str:
    """Who published, as user@host like ours: native keeps the From in
    `sender` only when it differs from the presentity."""
    sender = _text(row["sender"])
    if not sender:
        return presentity
    try:
        return parse_uri(sender).aor
    except BadRequest:
        raise _Skip("sender not a SIP URI") from None


# -- subscriptions ------------------------------------------------------------

def _subscription(row: dict, domain: str, settings: Settings,
                  authorizer: Authorizer) -> Subscription:
    event = _text(row["event"])
    pkg = PACKAGES.get(event)
    if pkg is None:
        raise _Skip(f"event {event!r} (we serve {', '.join(PACKAGES)})")
    presentity = _fits(parse_uri(_text(row["presentity_uri"])).aor, 255)
    watcher = _aor(_text(row["watcher_username"]), _text(row["watcher_domain"]))
    granted = _authorization(pkg, row, presentity, watcher, settings, authorizer)
    remote_target = _fits(_text(row["contact"]), 1024)
    parse_uri(remote_target)
    return Subscription(
        presence_domain=domain, event=event, event_id=check_event_id(_text(row["event_id"])),
        presentity=presentity, watcher=watcher, watcher_display="",
        call_id=check_call_id(_text(row["callid"])),
        # Native was the notifier: the tag it put in To is ours.
        local_tag=check_tag(_text(row["to_tag"])), remote_tag=check_tag(_text(row["from_tag"])),
        # As our SUBSCRIBE path stores them: To and From without tag, here
        # as native itself sends them in its NOTIFYs.
        local_uri=_fits(_name_addr(_text(row["to_user"]), _text(row["to_domain"])), 1024),
        remote_uri=_fits(_name_addr(_text(row["from_user"]), _text(row["from_domain"])), 1024),
        remote_target=remote_target, route_set=route_set(_text(row["record_route"])),
        local_contact=_fits(_text(row["local_contact"]), 255),
        socket=_fits(_text(row["socket_info"]), 128), received="",
        remote_cseq=max(int(row["remote_cseq"]), 0),
        local_cseq=last_notify_cseq(event, int(row["local_cseq"]), int(row["version"])),
        # The format native negotiates for each package: it serves no other.
        content_type=pkg.sent_as(pkg.formats[0]), status=granted.status, reason=granted.reason,
        permissions=granted.permissions, expires_at=int(row["expires"]))


def _authorization(pkg, row: dict, presentity: str, watcher: str,
                   settings: Settings, authorizer: Authorizer) -> Authorization:
    status, reason = int(row["status"]), _text(row["reason"])
    if status == NATIVE_TERMINATED:
        # Ended: no NOTIFY may follow in this dialog.
        raise _Skip("subscription terminated")
    if pkg.authorization in (PackageAuthorization.OWNER, PackageAuthorization.SELF):
        # Native lets anyone watch a watcher list or registrations; ours
        # has a policy of its own (winfo_auth, auth), which decides
        # without I/O.
        granted = authorizer.authorize(pkg, "", presentity, watcher)
        if granted.status == TERMINATED:
            raise _Skip(f"{pkg.name} subscription our authorization (winfo_auth, auth)"
                        " refuses")
        return granted
    return native_authorization(status, reason, settings.auth)


def native_authorization(status: int, reason: str, auth: str) -> Authorization:
    """What our authorization gives a presence watcher native left in
    `status`: the same standing, with the view it implies."""
    if auth == "none":
        # Ours lets every watcher in, and would never re-evaluate a pending one.
        return ACTIVE_ALL
    if status == NATIVE_POLITE_BLOCK or (status == NATIVE_ACTIVE and reason == POLITE_BLOCK):
        # Looks active to the watcher, shows it nothing (RFC 5025 3.2.1).
        return Authorization(ACTIVE, permissions=presrules.NOTHING)
    if status == NATIVE_ACTIVE:
        return ACTIVE_ALL
    if status in (NATIVE_PENDING, NATIVE_WAITING):
        return WAIT
    raise _Skip(f"unknown subscription status {status}")


def last_notify_cseq(event: str, local_cseq: int, version: int) -> int:
    """Our local_cseq (the CSeq of the last NOTIFY sent) for a native
    subscription.  Native stores the CSeq before tm increments it for the
    request, so its last NOTIFY carried local_cseq + 1.  A watcher-info,
    dialog-info or reginfo document's version is, with us, its NOTIFY's
    CSeq minus one; native counts versions on its own (the column holds
    the last one sent), and the next version must exceed it (RFC 3857 5.2,
    RFC 4235 4.1: a watcher discards a lower one)."""
    last = max(local_cseq, 0) + 1
    if PACKAGES[event].versioned:
        last = max(last, version + 1)
    return last


def route_set(record_route: str) -> str:
    """Native keeps the SUBSCRIBE's Record-Route values in received order
    joined by ','; ours as notifier.route_set_of does."""
    return route_set_of(split_list(record_route) if record_route else [])


def _name_addr(user: str, host: str) -> str:
    return f"<sip:{user}@{host}>" if user else f"<sip:{host}>"


# -- decisions ----------------------------------------------------------------

def _decision(row: dict, domain: str) -> ImportedDecision:
    """Our decision of a watchers row."""
    event = _text(row["event"])
    pkg = PACKAGES.get(event)
    if pkg is None or pkg.authorization not in (PackageAuthorization.RULES,
                                                 PackageAuthorization.DECISIONS):
        # Decisions are kept for the packages the `auth` setting governs
        # (watcher information: winfo_auth decides; reg: the AOR only).
        raise _Skip(f"decision for event {event!r}")
    presentity = _fits(parse_uri(_text(row["presentity_uri"])).aor, 255)
    watcher = _aor(_text(row["watcher_username"]), _text(row["watcher_domain"]))
    status, reason = decision_status(int(row["status"]), _text(row["reason"]))
    return ImportedDecision(presentity, watcher, domain, event, status, reason,
                            int(row["inserted_time"]))


def decision_status(status: int, reason: str) -> tuple[str, str]:
    """A native watchers status in pa_watcher's words (pending, active,
    terminated, polite-block) with its reason."""
    if status == NATIVE_POLITE_BLOCK or (status == NATIVE_ACTIVE and reason == POLITE_BLOCK):
        return POLITE_BLOCK, ""
    if status == NATIVE_ACTIVE:
        return ACTIVE, ""
    if status in (NATIVE_PENDING, NATIVE_WAITING):
        return PENDING, ""
    if status == NATIVE_TERMINATED:
        # The reason goes into Subscription-State: a token of our column's size.
        return TERMINATED, reason if len(reason) <= 32 and is_token(reason) else "rejected"
    raise _Skip(f"unknown decision status {status}")
