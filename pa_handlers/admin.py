"""pa-admin: look at and manage presence state, for operators.

    pa-admin [--config FILE] [--json] COMMAND ...
    python3 -m pa_handlers.admin ...

It reads the presence agent's settings (PA_CONFIG or --config) and works on
its database.  What needs SIP (telling watchers) it leaves to Kamailio as a
task that the timer of some node carries out within a second, so it works
whether or not it runs beside Kamailio.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import getpass
import hashlib
import json
import os
import sys
import time

from . import schema
from .config import ConfigError, load_settings
from .sip import BadRequest, parse_uri, printable
from .packages import PACKAGES, PRESENCE, composed
from .records import PRESENCE_DOMAINS, REGISTRAR, DocumentKey, TaskKind
from .store import SCHEMA_VERSION, Database, Store, StoreUnavailable

DEFAULT_CONFIG = "/etc/presence-agent/pa.yaml"  # where bin/pa-run puts it


class AdminError(Exception):
    """A failure worded for the operator (exit status 2)."""


def aor(text: str) -> str:
    """user@host from a SIP URI or a bare user@host."""
    candidate = text if ":" in text.split("@")[0] else "sip:" + text
    try:
        uri = parse_uri(candidate)
    except BadRequest as e:
        raise AdminError(f"not a SIP URI: {text!r} ({e.reason})") from None
    if not uri.user:
        raise AdminError(f"not a user's address: {text!r}")
    return uri.aor


def _account(text: str) -> tuple[str, str]:
    """(user, domain) of a SIP user in Kamailio's subscriber table."""
    user, _, domain = aor(text).rpartition("@")
    if len(user) > 64 or len(domain) > 64:
        raise AdminError(f"user and domain have at most 64 characters each: {text!r}")
    return user, domain


def _password() -> str:
    """The new password: asked twice on a terminal, else the first line of
    standard input (never an argument: ps and shell history show those)."""
    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            raise AdminError("the passwords differ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise AdminError("no password given")
    return password


def _when(epoch) -> str:
    if not epoch:
        return "-"
    return datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%SZ")


def _in(epoch, now: int) -> str:
    return f"{int(epoch) - now}s" if epoch else "-"


# -- output -----------------------------------------------------------------

def table(rows: list[dict], columns: list[str]) -> str:
    """Rows aligned under their column names; what the network stored
    there is shown with control characters escaped."""
    if not rows:
        return "(none)"
    cells = [{c: printable(str(r.get(c, ""))) for c in columns} for r in rows]
    widths = {c: max(len(c), *(len(r[c]) for r in cells)) for c in columns}
    lines = ["  ".join(c.upper().ljust(widths[c]) for c in columns)]
    lines += ["  ".join(r[c].ljust(widths[c]) for c in columns) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


@dataclasses.dataclass
class Output:
    json: bool

    def show(self, data, columns: list[str] | None = None, text: str | None = None) -> None:
        if self.json:
            print(json.dumps(data, indent=2, default=str))
        elif text is not None:
            print(text)
        else:
            print(table(data, columns))


# -- commands -----------------------------------------------------------------

class Admin:
    def __init__(self, store: Store, out: Output, clock=time.time):
        self.store = store.admin
        self.documents = store.documents
        self.decisions = store.decisions
        self.tasks = store.tasks
        self.backend = store.backend
        self.out = out
        self.clock = clock

    def now(self) -> int:
        return int(self.clock())

    def presentities(self, args) -> None:
        rows = self.store.presentities(args.domain, PRESENCE.name, args.like, self.now())
        self.out.show(rows, ["presentity", "domain", "publications", "watchers", "version"])

    def show(self, args) -> None:
        """A presentity's publications of every package, and the document of
        each package it has state of (presence always)."""
        key = aor(args.presentity)
        pubs = self.store.publications(key, args.domain, self.now())
        now = self.now()
        rows = [dict(event=p["event"], etag=p["etag"], origin=p["origin"], source=p["source"],
                     publisher=p["publisher"], expires=_in(p["expires_at"], now),
                     updated=_when(p["updated_at"])) for p in pubs]
        events = [e for e in composed() if e == PRESENCE.name or any(
            r["event"] == e for r in rows)]
        documents = {}
        for event in events:
            version, document = self.documents.current(DocumentKey(key, args.domain, event))
            documents[event] = {"version": version,
                                "document": (document or b"").decode("utf-8", "replace")}
        if self.out.json:
            self.out.show({"presentity": key, "domain": args.domain, "publications": rows,
                           "version": documents[PRESENCE.name]["version"],
                           "document": documents[PRESENCE.name]["document"],
                           "documents": documents})
            return
        print(table(rows, ["event", "etag", "origin", "source", "publisher", "expires",
                           "updated"]))
        for event, doc in documents.items():
            print()
            print(f"{event} document (version {doc['version']}):")
            print(doc["document"] or "(nothing published: watchers see"
                  f" {PACKAGES[event].documents.empty_state})")

    def watchers(self, args) -> None:
        key = aor(args.presentity)
        now = self.now()
        rows = [dict(watcher=s["watcher"], event=s["event"], status=s["status"],
                     expires=_in(s["expires_at"], now),
                     last_notify=s["last_notify_code"] or "ok", cseq=s["local_cseq"],
                     call_id=s["call_id"])
                for s in self.store.subscriptions(key, args.domain)]
        decisions = self.store.decisions(key, args.domain)
        if self.out.json:
            self.out.show({"subscriptions": rows, "decisions": decisions})
            return
        print(table(rows, ["watcher", "event", "status", "expires", "last_notify", "cseq",
                           "call_id"]))
        if decisions:
            print()
            print("decisions:")
            print(table(decisions, ["watcher", "event", "status", "reason", "updated"]))

    def lists(self, args) -> None:
        """The list URIs (rls-services) and the live list subscriptions with
        what each member was last told."""
        now = self.now()
        services = [dict(list=f"sip:{uri}", owner=owner) for uri, owner in self.store.list_services()]
        subs = []
        for list_uri, owner, watcher, event, expires_at, members in self.store.list_subscriptions(
                args.limit):
            subs.append(dict(list=list_uri, owner=owner or "(ad-hoc)", watcher=watcher,
                             event=event, expires=_in(expires_at, now),
                             members=[dict(uri=uri, source=source, state=state or "-",
                                           reason=reason) for uri, source, state, reason
                                      in members]))
        backend = [dict(resource=resource, event=event, subscriber=subscriber, phase=phase,
                        state=state or "-", reason=reason,
                        expires=_in(expires_at, now) if expires_at else "-",
                        failures=failures, last_code=code or "", call_id=call_id)
                   for resource, event, subscriber, phase, state, reason, expires_at, failures,
                   code, call_id in self.backend.all(args.limit)]
        if self.out.json:
            self.out.show({"services": services, "subscriptions": subs, "backend": backend})
            return
        print("services:")
        print(table(services, ["list", "owner"]))
        for sub in subs:
            print()
            print(f"{sub['list']} watched by {sub['watcher']} ({sub['event']}, owner"
                  f" {sub['owner']}, expires in {sub['expires']}):")
            print(table(sub["members"], ["uri", "source", "state", "reason"]))
        print()
        print("back-end subscriptions (members of other domains):")
        print(table(backend, ["resource", "event", "subscriber", "phase", "state", "reason",
                              "expires", "failures", "last_code"]))

    def decide(self, args, status: str, reason: str) -> None:
        presentity, watcher = aor(args.presentity), aor(args.watcher)
        self.decisions.decide(presentity, watcher, args.domain, args.event, status, reason,
                              self.now())
        self.out.show({"presentity": presentity, "watcher": watcher, "event": args.event,
                       "status": status},
                      text=f"{watcher} is {status} for {presentity} ({args.event});"
                           " watchers are told by Kamailio within a second")

    def remove(self, args) -> None:
        presentity, watcher = aor(args.presentity), aor(args.watcher)
        self.decisions.forget(presentity, watcher, args.domain, self.now())
        self.out.show({"presentity": presentity, "watcher": watcher, "removed": True},
                      text=f"{watcher}'s subscriptions to {presentity} end"
                           " (terminated;reason=deactivated) and its decision is forgotten")

    def end(self, args) -> None:
        if not self.store.subscription_exists(args.call_id):
            raise AdminError(f"no subscription with Call-ID {args.call_id!r}")
        self.tasks.enqueue(TaskKind.END, "", "", self.now(), args.call_id)
        self.out.show({"call_id": args.call_id, "ended": True},
                      text="the subscription ends (terminated;reason=deactivated)")

    def purge(self, args) -> None:
        # Kamailio's sweep, not a DELETE here: it tells the watchers of an
        # expired subscription and recomposes documents without expired
        # publications.
        backlog = self.store.backlog(self.now())
        expired = {"subscriptions": backlog["expired subscriptions"],
                   "publications": backlog["expired publications"]}
        self.tasks.enqueue(TaskKind.SWEEP, "", "", self.now())
        self.out.show(expired, text=f"{expired['subscriptions']} subscriptions and"
                      f" {expired['publications']} publications have expired; Kamailio"
                      " removes them within a second")

    def counts(self, args) -> None:
        now = self.now()
        live, backlog = self.store.counts(now), self.store.backlog(now)
        counts = {f"subscriptions {event} {status}": n
                  for (event, status), n in sorted(live.subscriptions.items())}
        counts.update({f"publications {origin}": n
                       for origin, n in sorted(live.publications.items())})
        counts.update({f"{event} publications": n
                       for event, n in sorted(live.by_event.items())})
        counts.update({"documents": backlog["documents"],
                       "tasks waiting": backlog["tasks waiting"]})
        self.out.show(counts, text="\n".join(f"{k}: {v}" for k, v in counts.items()))

    def user_add(self, args) -> None:
        user, domain = _account(args.address)
        self._need_users()
        password = _password()
        ha1 = hashlib.md5(f"{user}:{domain}:{password}".encode()).hexdigest()
        ha1b = hashlib.md5(f"{user}@{domain}:{domain}:{password}".encode()).hexdigest()
        created = self.store.set_user(user, domain, ha1, ha1b)
        self.out.show({"user": f"{user}@{domain}", "created": created},
                      text=f"{user}@{domain} " + ("created" if created else "has a new password"))

    def user_remove(self, args) -> None:
        user, domain = _account(args.address)
        self._need_users()
        if not self.store.remove_user(user, domain):
            raise AdminError(f"no user {user}@{domain}")
        self.out.show({"user": f"{user}@{domain}", "removed": True},
                      text=f"{user}@{domain} removed")

    def user_list(self, args) -> None:
        self._need_users()
        self.out.show(self.store.users(args.like), ["user"])

    def _need_users(self) -> None:
        if not self.store.has_table("subscriber"):
            raise AdminError("the database has no subscriber table: run"
                             " `pa-admin db upgrade --kamailio-tables`")

    def db_version(self, args) -> None:
        version = self.store.schema_version()
        self.out.show({"schema": version, "known": SCHEMA_VERSION},
                      text=f"schema version {version} (this pa-admin knows up to"
                           f" {SCHEMA_VERSION})")

    def db_upgrade(self, args) -> None:
        try:
            applied = schema.upgrade(self.store, args.kamailio_tables)
        except (ValueError, OSError) as e:
            raise AdminError(str(e)) from None
        self.out.show({"applied": applied},
                      text="\n".join(f"applied {name}" for name in applied)
                      or "schema up to date")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pa-admin", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", help=f"settings file (default: $PA_CONFIG, else {DEFAULT_CONFIG})")
    p.add_argument("--json", action="store_true", help="output for scripts")
    sub = p.add_subparsers(dest="command", required=True)

    def command(name, help, *args, domain=True):
        c = sub.add_parser(name, help=help)
        for arg in args:
            c.add_argument(arg)
        if domain:
            c.add_argument("--domain", default=REGISTRAR, choices=PRESENCE_DOMAINS)
        return c
    c = command("presentities", "list presentities")
    c.add_argument("like", nargs="?", default="", help="part of the address")
    command("show", "publications and document of a presentity", "presentity")
    command("watchers", "subscriptions to a presentity", "presentity")
    # Decisions are kept per event package (presence, dialog, message-summary).
    for name, help in (("approve", "let a watcher see a presentity"),
                       ("reject", "refuse a watcher")):
        command(name, help, "presentity", "watcher").add_argument(
            "--event", default=PRESENCE.name,
            choices=[e for e, p in PACKAGES.items() if not p.watcher_info_of])
    command("remove", "end a watcher's subscriptions", "presentity", "watcher")
    command("end", "end one subscription", "call_id", domain=False)
    command("purge", "remove expired state now, telling watchers", domain=False)
    command("counts", "how much state there is", domain=False)
    c = command("lists", "resource lists: list URIs, list subscriptions, their members'"
                " states and the back-end subscriptions", domain=False)
    c.add_argument("--limit", type=int, default=100, help="at most so many list subscriptions")
    users = sub.add_parser("user", help="SIP and XCAP users (Kamailio's subscriber table)")
    users_sub = users.add_subparsers(dest="user_command", required=True)
    users_sub.add_parser("add", help="create a user, or give it a new password (read from"
                         " standard input, or asked for on a terminal)").add_argument("address")
    users_sub.add_parser("remove", help="remove a user").add_argument("address")
    users_sub.add_parser("list", help="list users").add_argument(
        "like", nargs="?", default="", help="part of the address")
    db = sub.add_parser("db", help="the schema")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser("version", help="the database's schema version")
    up = db_sub.add_parser("upgrade", help="apply the missing files of sql/")
    up.add_argument("--kamailio-tables", action="store_true",
                    help="also create the Kamailio tables kamailio.cfg.sample uses")
    imp = sub.add_parser("import-native", help="carry Kamailio's native presence state over")
    imp.add_argument("--from-url", help="database of the native tables (default: db_url)")
    imp.add_argument("--domain", default=REGISTRAR, choices=PRESENCE_DOMAINS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    out = Output(args.json)
    try:
        settings = load_settings(args.config or os.environ.get("PA_CONFIG") or DEFAULT_CONFIG)
        store = Store(Database.for_settings(settings))
        admin = Admin(store, out)
        if args.command == "db":
            (admin.db_upgrade if args.db_command == "upgrade" else admin.db_version)(args)
        elif args.command == "import-native":
            from .native_import import import_native
            counts = import_native(store, settings, args.from_url, args.domain, int(time.time()))
            out.show(counts, text="\n".join(
                f"{k}: {v}" if k in ("skipped", "already present") else f"imported {k}: {v}"
                for k, v in counts.items()))
        elif args.command == "user":
            getattr(admin, "user_" + args.user_command)(args)
        elif args.command in ("approve", "reject"):
            admin.decide(args, "active" if args.command == "approve" else "terminated",
                         "" if args.command == "approve" else "rejected")
        else:
            getattr(admin, args.command)(args)
    except ConfigError as e:
        print(f"pa-admin: configuration error: {e}", file=sys.stderr)
        return 2
    except StoreUnavailable as e:
        print(f"pa-admin: database unavailable: {e}", file=sys.stderr)
        return 2
    except (AdminError, ValueError) as e:
        # ValueError: native_import's NativeImportError, worded for people.
        print(f"pa-admin: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
