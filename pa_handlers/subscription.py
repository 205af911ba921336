"""A subscription (RFC 6665): the dialog a SUBSCRIBE created, its state,
and the NOTIFY requests the notifier sends in it."""

from __future__ import annotations

import dataclasses

from .messages import Notify
from .sip import parse_name_addr, parse_uri, split_list

PENDING = "pending"
ACTIVE = "active"
TERMINATED = "terminated"


@dataclasses.dataclass
class Subscription:
    presence_domain: str
    event: str
    event_id: str
    presentity: str
    watcher: str
    watcher_display: str
    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: str
    remote_uri: str
    remote_target: str
    route_set: str
    local_contact: str
    socket: str
    received: str
    remote_cseq: int
    local_cseq: int
    content_type: str
    status: str
    reason: str
    permissions: int
    expires_at: int
    id: int | None = None

    @property
    def dialog(self) -> tuple[str, str, str]:
        return (self.call_id, self.local_tag, self.remote_tag)

    @property
    def event_header(self) -> str:
        return f"{self.event};id={self.event_id}" if self.event_id else self.event


# Column order of every SELECT that builds a Subscription.
COLUMNS = tuple(f.name for f in dataclasses.fields(Subscription))


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
    if body:
        lines.append(f"Content-Type: {content_type}")
    return Notify(ruri=ruri, nexthop=nexthop, socket=sub.socket,
                  headers="\r\n".join(lines) + "\r\n", body=body,
                  dialog=sub.dialog, cseq=cseq)
