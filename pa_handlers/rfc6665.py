"""RFC 6665 (SIP-specific event notification) as every role reads it: the
one Event header a request carries, the Expires it is granted, the parts
of a SUBSCRIBE that become the dialog (Contact, Record-Route, event id),
and the size of what is stored.  Shared by the notifier (SUBSCRIBE), the
compositor (PUBLISH, RFC 3903 uses the same Event and Expires rules) and
the native import."""

from __future__ import annotations

from .config import Settings
from .messages import Outcome, reply
from .sip import (BadRequest, EventHeader, NameAddr, SipRequest, is_token, parse_delta_seconds,
                  parse_event, parse_name_addr, parse_uri)


def served_event(req: SipRequest, served) -> EventHeader | None:
    """The request's one Event header (8.2.1), if its package is among
    `served`."""
    events = req.headers.get("event", [])
    event = parse_event(events[0]) if len(events) == 1 else None
    return event if event is not None and event.package in served else None


def granted_expires(req: SipRequest, settings: Settings, maximum: int,
                    default: int | None = None) -> int | Outcome:
    """The Expires we grant (3.1.1): the default when absent (the package's,
    else default_expires), clamped to `maximum`, and 423 for a non-zero
    value below min_expires."""
    value = req.header("expires")
    if value is None:
        return min(default or settings.default_expires, maximum)
    expires = parse_delta_seconds(value, "Expires")
    if 0 < expires < settings.min_expires:
        return reply(423, ("Min-Expires", str(settings.min_expires)))
    return min(expires, maximum)


def check_event_id(value: str) -> str:
    # Every NOTIFY echoes the id, and Kamailio's t_uac_send turns "!!" in
    # a header into its own address: no '!' (a token character) there.
    if value and (len(value) > 128 or not is_token(value) or "!" in value):
        raise BadRequest("Bad Event id")
    return value


def fits(value: str, limit: int, what: str) -> str:
    """What is stored of the request: refused (400) when too long."""
    if len(value) > limit:
        raise BadRequest(f"{what} Too Long")
    return value


def name_addr(req: SipRequest, name: str) -> NameAddr:
    value = req.header(name)
    if value is None:
        raise BadRequest(f"Missing {name.title()}")
    return parse_name_addr(value)


def remote_target(req: SipRequest, required: bool) -> str | None:
    """The SUBSCRIBE's Contact: the request-URI of our NOTIFYs (target
    refresh on an in-dialog SUBSCRIBE, where it may be absent)."""
    contacts = req.header_list("contact")
    if not contacts:
        if required:
            raise BadRequest("Missing Contact")
        return None
    if len(contacts) != 1:
        raise BadRequest("More Than One Contact")
    uri = parse_name_addr(contacts[0]).uri
    parse_uri(uri)
    if "!" in uri:
        # Behind a strict router the remote target becomes the last Route
        # of our NOTIFYs, where Kamailio replaces "!!" (see check_event_id).
        raise BadRequest("Bad Contact")
    return uri


def route_set(req: SipRequest) -> str:
    return route_set_of(req.header_list("record-route"))


def route_set_of(routes: list[str]) -> str:
    """Record-Route values, in received order, as a subscription keeps them."""
    for route in routes:
        parse_uri(parse_name_addr(route).uri)
        if "!" in route:
            # Copied into the Route of our NOTIFYs (see check_event_id).
            raise BadRequest("Bad Record-Route")
    joined = ", ".join(routes)
    if len(joined) > 4096:
        raise BadRequest("Record-Route Too Long")
    return joined
