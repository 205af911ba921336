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
                      implicit decisions, pres-rules), DECISIONS (`auth`
                      none, else the presentity's own decisions: pres-rules
                      are for presence), OWNER (the presentity only, unless
                      `winfo_auth` is none) or SELF (the presentity only,
                      unless `auth` is none)
    default_expires   the package's duration when a SUBSCRIBE gives none
                      (its RFC's; 0: the default_expires setting)
    usrloc            the registrar keeps this package's state of the
                      registrar domain (from usrloc's bindings, no PUBLISH)

Which packages are served is the `event_packages` setting (enabled()).

Event names appear as literals here and in sql/ only.
"""

from __future__ import annotations

import dataclasses
import enum

from . import winfo
from .config import ConfigError, Settings
from .dialoginfo import DIALOG_DOCUMENTS
from .message_summary import MESSAGE_SUMMARY_DOCUMENTS
from .presence import PRESENCE_DOCUMENTS, PresenceDocuments
from .reginfo import REG_DOCUMENTS


class Authorization(enum.Enum):
    RULES = "rules"
    DECISIONS = "decisions"
    OWNER = "owner"
    SELF = "self"


@dataclasses.dataclass(frozen=True)
class EventPackage:
    name: str
    formats: tuple[str, ...]
    documents: PresenceDocuments | None = None   # or any object with its methods
    watcher_info_of: str = ""
    authorization: Authorization = Authorization.RULES
    default_expires: int = 0
    usrloc: bool = False

    @property
    def publishable(self) -> bool:
        """Whether PUBLISH may carry it (reg's state is the registrar's)."""
        return bool(self.publish_types)

    @property
    def composed(self) -> bool:
        """Whether its state is a presentity's document made of
        publications (by PUBLISH, or by the registrar)."""
        return self.documents is not None

    @property
    def publish_types(self) -> tuple[str, ...]:
        return self.documents.publish_types if self.documents else ()

    @property
    def versioned(self) -> bool:
        """Whether its documents carry the subscription's own version (the
        NOTIFY's CSeq minus one): watcher information, dialog, reg."""
        return bool(self.watcher_info_of) or bool(self.documents and self.documents.versioned)

    def sent_as(self, content_type: str) -> str:
        """The Content-Type a negotiated format is sent with."""
        return self.documents.sent_as(content_type) if self.documents else content_type


PRESENCE = EventPackage(name="presence", formats=PRESENCE_DOCUMENTS.formats,
                        documents=PRESENCE_DOCUMENTS)
WATCHER_INFO = EventPackage(name="presence.winfo", formats=(winfo.WATCHERINFO,),
                            watcher_info_of=PRESENCE.name, authorization=Authorization.OWNER)

# RFC 4235: busy-lamp fields; several publishers aggregated per entity.
# Default durations are the RFCs' (an hour: RFC 4235 3.4, RFC 3842 3.4).
DIALOG = EventPackage(name="dialog", formats=DIALOG_DOCUMENTS.formats,
                      documents=DIALOG_DOCUMENTS, authorization=Authorization.DECISIONS,
                      default_expires=3600)
# RFC 3842: message-waiting indication; the newest publication is the state.
MESSAGE_SUMMARY = EventPackage(name="message-summary", formats=MESSAGE_SUMMARY_DOCUMENTS.formats,
                               documents=MESSAGE_SUMMARY_DOCUMENTS,
                               authorization=Authorization.DECISIONS, default_expires=3600)
# RFC 3680: registration state, from the registrar's bindings only (its
# documents refuse PUBLISH); 3761 s is the RFC's default duration (4.4).
REG = EventPackage(name="reg", formats=REG_DOCUMENTS.formats, documents=REG_DOCUMENTS,
                   authorization=Authorization.SELF, default_expires=3761, usrloc=True)

PACKAGES: dict[str, EventPackage] = {
    p.name: p for p in (PRESENCE, WATCHER_INFO, DIALOG, MESSAGE_SUMMARY, REG)}


def package(name: str) -> EventPackage:
    """The package of a stored subscription or publication."""
    return PACKAGES[name]


def watcher_info_for(name: str) -> EventPackage | None:
    """The watcher-information package that lists the watchers of `name`."""
    return next((p for p in PACKAGES.values() if p.watcher_info_of == name), None)


def enabled(settings: Settings) -> dict[str, EventPackage]:
    """The packages the `event_packages` setting enables (all when it is
    empty); a watcher-information package comes with the package it
    lists.  An unknown name is a ConfigError (Kamailio does not start)."""
    wanted = settings.event_packages
    unknown = [name for name in wanted if name not in PACKAGES]
    if unknown:
        raise ConfigError(f"'event_packages' names unknown package {unknown[0]!r}"
                          f" (known: {', '.join(PACKAGES)})")
    if not wanted:
        return dict(PACKAGES)
    return {name: p for name, p in PACKAGES.items()
            if name in wanted or (p.watcher_info_of and p.watcher_info_of in wanted)}


def allow_events(served: dict[str, EventPackage] | None = None) -> tuple[str, str]:
    """The Allow-Events header of a 489 (RFC 6665 8.2.2)."""
    return ("Allow-Events", ", ".join(served if served is not None else PACKAGES))


def publishable(served: dict[str, EventPackage] | None = None) -> dict[str, EventPackage]:
    """The packages a PUBLISH may carry (RFC 3903): watcher information is
    the notifier's own state, nobody publishes it."""
    return {name: p for name, p in (served if served is not None else PACKAGES).items()
            if p.publishable}


def composed() -> dict[str, EventPackage]:
    """The packages whose state is a composed document (the compositor's)."""
    return {name: p for name, p in PACKAGES.items() if p.composed}


def usrloc_packages() -> list[EventPackage]:
    """The packages whose registrar-domain state follows usrloc's bindings
    (besides presence, whose bindings are tuples)."""
    return [p for p in PACKAGES.values() if p.usrloc]
