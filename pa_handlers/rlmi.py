"""The body of a list NOTIFY (RFC 4662 5): a multipart/related (RFC 2387)
whose root part is the Resource List Meta-Information (RLMI) document,
application/rlmi+xml, and whose other parts are the members' documents,
each referred to by the `cid` of its resource's <instance>.

    <list uri version fullState>     version: 0 in the first NOTIFY, +1 each
      <resource uri>                 one per member (full state: every one;
        <name>Bob</name>             partial: those that changed)
        <instance id state [reason] [cid]/>
"""

from __future__ import annotations

import hashlib
import secrets
from typing import NamedTuple
from xml.sax.saxutils import quoteattr, escape

RLMI = "application/rlmi+xml"
MULTIPART = "multipart/related"
RLMI_NS = "urn:ietf:params:xml:ns:rlmi"
EVENTLIST = "eventlist"


class Resource(NamedTuple):
    """One member as a NOTIFY tells it: state active, pending or
    terminated (with reason); active ones carry their document."""
    uri: str
    name: str
    state: str
    reason: str = ""
    content_type: str = ""
    body: str = ""


def instance_id(uri: str) -> str:
    """A member's instance id: stable for the member, so that subscribers
    match instances across NOTIFYs (RFC 4662 5.4 needs it unique within
    its resource only)."""
    return hashlib.sha1(uri.encode()).hexdigest()[:10]


def digest(resource: Resource) -> str:
    """What a subscriber was told of a member, in 32 characters: a partial
    NOTIFY carries the members whose digest changed."""
    h = hashlib.md5()
    for part in (resource.state, resource.reason, resource.content_type, resource.body,
                 resource.name):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def body(list_uri: str, version: int, full: bool, resources: list[Resource],
         host: str = "rls") -> tuple[str, str]:
    """(Content-Type, body) of a list NOTIFY."""
    tag = secrets.token_hex(6)
    boundary = f"rls-{tag}"
    root_cid = f"rlmi.{tag}@{host}"
    lines = ['<?xml version="1.0" encoding="UTF-8"?>',
             f'<list xmlns="{RLMI_NS}" uri={quoteattr(list_uri)} version="{version}"'
             f' fullState="{"true" if full else "false"}">']
    parts = []
    for n, resource in enumerate(resources):
        instance = instance_id(resource.uri)
        lines.append(f"<resource uri={quoteattr(resource.uri)}>")
        if resource.name:
            lines.append(f"<name>{escape(resource.name)}</name>")
        if not resource.state:
            # Nothing known of it yet (RFC 4662 4.5): listed without instance.
            lines.append("</resource>")
            continue
        attrs = f'id="{instance}" state="{resource.state}"'
        if resource.state == "terminated":
            attrs += f' reason="{resource.reason or "noresource"}"'
        elif resource.state == "active" and resource.body:
            cid = f"{instance}.{n}.{tag}@{host}"
            attrs += f' cid="{cid}"'
            parts.append((cid, resource.content_type, resource.body))
        lines.append(f"<instance {attrs}/>")
        lines.append("</resource>")
    lines.append("</list>")
    out = [_part(root_cid, RLMI, "\r\n".join(lines) + "\r\n", boundary)]
    out += [_part(cid, content_type, text, boundary) for cid, content_type, text in parts]
    content_type = (f'{MULTIPART};type="{RLMI}";start="<{root_cid}>";boundary="{boundary}"')
    return content_type, "".join(out) + f"--{boundary}--\r\n"


def _part(cid: str, content_type: str, text: str, boundary: str) -> str:
    return (f"--{boundary}\r\nContent-Transfer-Encoding: binary\r\nContent-ID: <{cid}>\r\n"
            f"Content-Type: {content_type}\r\n\r\n{text}\r\n")
