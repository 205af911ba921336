"""A subscription (RFC 6665): the dialog a SUBSCRIBE created, its state,
and the NOTIFY requests the notifier sends in it."""

from __future__ import annotations

from .messages import Notify
from .rlmi import EVENTLIST, MULTIPART
from .records import ACTIVE, PENDING, TERMINATED, Subscription
from .sip import parse_name_addr, parse_uri, split_list

# The record and its states live in records.py; the NOTIFYs here.
__all__ = ["ACTIVE", "PENDING", "TERMINATED", "Subscription", "build_notify",
           "route_target", "subscription_state"]


def subscription_state(status: str, expires_in: int, reason: str = "") -> str:
    if status == TERMINATED:
        return f"terminated;reason={reason or 'timeout'}"
    return f"{status};expires={max(expires_in, 0)}"


def route_target(sub: Subscription) -> tuple[str, str, list[str]]:
    """Request-URI, next hop and Route values of an in-dialog request
    (RFC 3261 12.2.1.1): loose routing when the first route has `lr`,
    otherwise strict routing with the remote target appended."""
    routes = split_list(sub.route_set) if sub.route_set else []
    if not routes:
        return sub.remote_target, "", []
    first = parse_name_addr(routes[0])
    if "lr" in parse_uri(first.uri).params:
        return sub.remote_target, first.uri, routes
    return first.uri, "", routes[1:] + [f"<{sub.remote_target}>"]


def build_notify(sub: Subscription, cseq: int, state: str,
                 content_type: str = "", body: str = "") -> Notify:
    ruri, nexthop, routes = route_target(sub)
    lines = [
        f"From: {sub.local_uri};tag={sub.local_tag}",
        f"To: {sub.remote_uri};tag={sub.remote_tag}",
        f"Call-ID: {sub.call_id}",
        f"CSeq: {cseq} NOTIFY",
    ]
    if routes:
        lines.append("Route: " + ", ".join(routes))
    lines += [
        f"Contact: <{sub.local_contact}>",
        f"Event: {sub.event_header}",
        f"Subscription-State: {state}",
    ]
    if sub.content_type == MULTIPART:
        # RFC 4662 4.1: every NOTIFY of a list subscription.
        lines.append(f"Require: {EVENTLIST}")
    if body:
        lines.append(f"Content-Type: {content_type}")
    return Notify(ruri=ruri, nexthop=nexthop, socket=sub.socket,
                  headers="\r\n".join(lines) + "\r\n", body=body,
                  dialog=sub.dialog, cseq=cseq)
