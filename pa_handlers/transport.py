"""Which transport a NOTIFY takes (RFC 3261 18.1.1).

A NOTIFY goes where its dialog says, over the transport the target's URI
names, UDP when it names none.  One too large for a UDP datagram would be
lost there: sendto() refuses it ("Message too long"), the transaction
times out, and the subscription would end as if the watcher were gone.
So, as RFC 3261 18.1.1 does for large requests, such a NOTIFY goes over
TCP when its next hop names no transport (every SIP element implements
TCP, RFC 3261 18); when the next hop insists on UDP it is not sent, the log
says so, and the subscription stays.
"""

from __future__ import annotations

import dataclasses
import logging

from .messages import Notify
from .sip import BadRequest, parse_uri

log = logging.getLogger("pa.transport")

# What Kamailio adds to the headers we give tm.t_uac_send: Via,
# Max-Forwards, Content-Length, User-Agent, with room to spare.
ADDED_BY_KAMAILIO = 400
_STREAM = ("tcp", "tls", "sctp", "ws", "wss")


def size(notify: Notify) -> int:
    """The NOTIFY's size on the wire, estimated from above."""
    return (len(f"NOTIFY {notify.ruri} SIP/2.0\r\n") + len(notify.headers.encode())
            + len(notify.body.encode()) + ADDED_BY_KAMAILIO)


def fit(notify: Notify, udp_mtu: int) -> Notify | None:
    """The NOTIFY as it can go: unchanged when it fits `udp_mtu` or goes
    over a stream transport anyway; with its next hop moved to TCP when it
    is too large for UDP and the hop allows TCP; None when it cannot go."""
    length = size(notify)
    if length <= udp_mtu:
        return notify
    hop = notify.nexthop or notify.ruri
    try:
        uri = parse_uri(hop)
    except BadRequest:
        return notify  # not ours to judge: Kamailio says what it makes of it
    transport = uri.params.get("transport", "").lower()
    if uri.scheme == "sips" or transport in _STREAM:
        return notify
    if transport:
        log.warning("NOTIFY to %s (call-id=%s cseq=%d) not sent: about %d bytes, over"
                    " notify_udp_mtu (%d), and the target takes only %s; the subscription"
                    " stays", notify.ruri, notify.call_id, notify.cseq, length, udp_mtu,
                    transport.upper())
        return None
    log.info("NOTIFY to %s (call-id=%s cseq=%d) goes over TCP: about %d bytes, over"
             " notify_udp_mtu (%d)", notify.ruri, notify.call_id, notify.cseq, length, udp_mtu)
    proto, colon, address = notify.socket.partition(":")
    socket = "tcp:" + address if colon and proto.lower() == "udp" else notify.socket
    return dataclasses.replace(notify, nexthop=_with_tcp(hop), socket=socket)


def _with_tcp(uri: str) -> str:
    # URI parameters come before any ?headers.
    base, question, headers = uri.partition("?")
    return base + ";transport=tcp" + question + headers
