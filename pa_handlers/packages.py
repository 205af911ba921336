"""The event packages this presence agent serves (RFC 6665 7): one entry
each, saying everything the notifier, the compositor, the store's callers,
Allow-Events/489 and the native import need to know of a package.  Adding
a package is an entry here and the code of its documents; nothing else
branches on a package's name.

    name              the Event header's token
    formats           the body types a watcher may ask for in Accept, in the
                      server's order of preference; the first is sent
                      without Accept
    documents         how published documents are parsed, composed into a
                      presentity's document and rendered for a watcher (None:
                      the state is not published but kept by the notifier)
    watcher_info_of   for a watcher-information package (RFC 3857), the
                      package whose watchers it lists
    authorization     who may watch: RULES (the `auth` setting: none,
                      implicit decisions, pres-rules) or OWNER (the
                      presentity only, unless `winfo_auth` is none)

Event names appear as literals here and in sql/ only.
"""

from __future__ import annotations

import dataclasses
import enum

from . import winfo
from .presence import PRESENCE_DOCUMENTS, PresenceDocuments


class Authorization(enum.Enum):
    RULES = "rules"
    OWNER = "owner"


@dataclasses.dataclass(frozen=True)
class EventPackage:
    name: str
    formats: tuple[str, ...]
    documents: PresenceDocuments | None = None
    watcher_info_of: str = ""
    authorization: Authorization = Authorization.RULES

    @property
    def publishable(self) -> bool:
        return self.documents is not None

    @property
    def publish_types(self) -> tuple[str, ...]:
        return self.documents.publish_types if self.documents else ()

    def sent_as(self, content_type: str) -> str:
        """The Content-Type a negotiated format is sent with."""
        return self.documents.sent_as(content_type) if self.documents else content_type


PRESENCE = EventPackage(name="presence", formats=PRESENCE_DOCUMENTS.formats,
                        documents=PRESENCE_DOCUMENTS)
WATCHER_INFO = EventPackage(name="presence.winfo", formats=(winfo.WATCHERINFO,),
                            watcher_info_of=PRESENCE.name, authorization=Authorization.OWNER)

PACKAGES: dict[str, EventPackage] = {p.name: p for p in (PRESENCE, WATCHER_INFO)}


def package(name: str) -> EventPackage:
    """The package of a stored subscription or publication."""
    return PACKAGES[name]


def watcher_info_for(name: str) -> EventPackage | None:
    """The watcher-information package that lists the watchers of `name`."""
    return next((p for p in PACKAGES.values() if p.watcher_info_of == name), None)


def allow_events() -> tuple[str, str]:
    """The Allow-Events header of a 489 (RFC 6665 8.2.2)."""
    return ("Allow-Events", ", ".join(PACKAGES))


def publishable() -> dict[str, EventPackage]:
    """The packages a PUBLISH may carry (RFC 3903): watcher information is
    the notifier's own state, nobody publishes it."""
    return {name: p for name, p in PACKAGES.items() if p.publishable}
