"""The plain values that cross the boundary between Kamailio and the
presence logic: where a request arrived, and the decisions taken (the
reply, the NOTIFYs to send).  kemi/ turns them into KSR calls."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Context:
    """Facts about a request that only Kamailio knows."""
    local_tag: str        # the To tag our reply will carry ($ltt)
    socket: str           # receiving socket, proto:ip:port ($Ras)
    local_contact: str    # URI for our Contact header ($RAut)
    source: str = ""      # sender, proto:ip:port
    publisher: str = ""   # identity the routing authenticated ($avp(pa_publisher))


@dataclasses.dataclass(frozen=True)
class Reply:
    code: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()


@dataclasses.dataclass(frozen=True)
class Notify:
    """A NOTIFY ready for Kamailio's tm.t_uac_send."""
    ruri: str
    nexthop: str
    socket: str
    headers: str
    body: str
    dialog: tuple[str, str, str]     # Call-ID, our tag, the watcher's tag
    cseq: int

    @property
    def call_id(self) -> str:
        return self.dialog[0]


@dataclasses.dataclass
class Outcome:
    """What to do for one request: reply first, then send the NOTIFYs."""
    reply: Reply
    notifies: list[Notify] = dataclasses.field(default_factory=list)
    # For the request's log line: what was decided, and for whom (when the
    # handler got that far; else the line shows the To and From).
    detail: str = ""
    presentity: str = ""
    watcher: str = ""     # for a PUBLISH, the publisher


REASONS = {
    200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
    406: "Not Acceptable", 412: "Conditional Request Failed",
    413: "Request Entity Too Large", 415: "Unsupported Media Type",
    423: "Interval Too Brief",
    481: "Call/Transaction Does Not Exist", 489: "Bad Event",
    500: "Server Internal Error", 501: "Not Implemented",
}


def reply(code: int, *headers: tuple[str, str], reason: str | None = None) -> Outcome:
    return Outcome(Reply(code, reason or REASONS[code], tuple(headers)))
