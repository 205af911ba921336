"""Settings of the presence agent, read from one YAML file.

The names are the SER `pa` module's parameters, so an operator who knew
SER recognises them.  Everything is checked when Kamailio starts: a missing
file, an unknown key or a bad value raises ConfigError with one sentence
that names the key, and Kamailio refuses to start.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import string
import urllib.parse
from typing import Any

import yaml


class ConfigError(Exception):
    """A settings problem, worded for the operator's log."""


AUTH_MODES = ("none", "implicit", "xcap")
DEFAULT_CACHE_BYTES = 4 * 1024 * 1024
# The largest UDP payload over IPv4 (65535 - 20 - 8).
UDP_MAX_PAYLOAD = 65507
WINFO_AUTH_MODES = ("none", "implicit")


@dataclasses.dataclass(frozen=True)
class DatabaseUrl:
    user: str
    password: str
    host: str
    port: int
    database: str
    unix_socket: str | None = None
    # Every server of a url naming several (host:port,host:port): tried in
    # this order (see store/db.py); the first is host and port.
    hosts: tuple[tuple[str, int], ...] = ()

    @property
    def servers(self) -> tuple[tuple[str, int], ...]:
        return self.hosts or ((self.host, self.port),)

    def redacted(self) -> str:
        where = ",".join(f"{host}:{port}" for host, port in self.servers)
        return f"mysql://{self.user}:***@{where}/{self.database}"


@dataclasses.dataclass(frozen=True)
class Settings:
    db_url: DatabaseUrl
    default_expires: int = 3600
    default_priority_percentage: int = 50
    pa_domain: str = ""
    min_expires: int = 60
    max_subscription_expiration: int = 3600
    max_publish_expiration: int = 3600
    timer_interval: int = 10
    # The statistics' gauges count whole tables (every stored subscription
    # and publication): with a million rows that is a second of the
    # database's CPU, so not every timer_interval.
    gauges_interval: int = 60
    auth: str = "implicit"
    winfo_auth: str = "implicit"
    # Not in SER; needed to behave well on a network and under faults.
    db_timeout: float = 3.0
    # Galera's causal reads (wsrep_sync_wait) for the plugin's connections:
    # 0 off, 7 every statement outside a transaction and the first of each
    # transaction (bits: reads 1, updates and deletes 2, inserts 4).
    db_sync_wait: int = 0
    retry_after: int = 5
    notify_timeout: int = 32
    ignore_408_on_notify: bool = False
    # Limits on what one watcher, or the watchers of one presentity, can
    # make us hold and send (new subscriptions beyond them get 403).
    max_subscriptions_per_watcher: int = 500
    max_subscriptions_per_presentity: int = 1000
    # Authorization documents (auth: xcap).
    auth_rules_refresh_time: int = 300
    xcap_document_path: str = "/xcap-root/pres-rules/users/{xui}/index"
    xcap_timeout: float = 2.0
    xcap_auth: str = "digest"
    xcap_nonce_secret: str = ""
    # Who may read the Prometheus metrics at /metrics of the HTTP listener
    # that XCAP clients reach too: addresses and networks.
    metrics_sources: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (
        ipaddress.ip_network("127.0.0.1"), ipaddress.ip_network("::1"))
    # The jabber domain: the XMPP gateway (pa_handlers.xmpp_component).
    xmpp_domains: tuple[str, ...] = ()
    xmpp_component: str = ""
    xmpp_component_server: str = "127.0.0.1:5347"
    xmpp_component_secret: str = ""
    xmpp_sip_domain: str = ""
    # Resources (devices) kept per XMPP user; presence from more is ignored.
    xmpp_max_resources: int = 10
    # Limits on what the network can make grow.
    max_publication_elements: int = 32
    max_publications: int = 16
    max_document_bytes: int = 48 * 1024
    cache_bytes: int = DEFAULT_CACHE_BYTES
    max_winfo_entries_per_watcher: int = 8
    max_display_name: int = 64
    notify_udp_mtu: int = UDP_MAX_PAYLOAD
    # The event packages served (packages.py); empty: all of them.
    event_packages: tuple[str, ...] = ()
    # The resource list server (RFC 4662, RFC 4826, RFC 5367).
    rls_max_document_bytes: int = 64 * 1024
    rls_max_members: int = 200
    rls_max_depth: int = 8
    rls_notify_interval: int = 1
    rls_max_notify_bytes: int = 64 * 1024
    # Back-end subscriptions (RFC 4662 4.5): the domains this server is
    # authoritative for; list members of any other domain are subscribed
    # to upstream.  Empty: every member is served locally (no back-end
    # subscription at all).
    local_domains: tuple[str, ...] = ()
    # Per remote domain, where its back-end SUBSCRIBEs go (host:port, the
    # next hop); a domain not named here: Kamailio's normal routing of
    # the member's URI (DNS, RFC 3263).
    backend_routes: tuple[tuple[str, str], ...] = ()
    backend_expires: int = 3600
    # Seconds without a final answer after which a back-end SUBSCRIBE has
    # failed (timeout), and the retry backoff after a failure.
    backend_timeout: int = 10
    backend_retry_min: int = 5
    backend_retry_max: int = 600
    max_backend_subscriptions_per_subscriber: int = 200

    @property
    def default_priority(self) -> float:
        return self.default_priority_percentage / 100.0

    def is_local(self, host: str) -> bool:
        """Whether a resource of `host` is served from local state (no
        local_domains: all are)."""
        host = host.lower()
        return not self.local_domains or host in self.local_domains \
            or host in self.xmpp_domains

    def backend_next_hop(self, host: str) -> str:
        """The next hop of back-end SUBSCRIBEs to `host`: a SIP URI, or ''
        for Kamailio's normal routing."""
        hop = dict(self.backend_routes).get(host.lower())
        return f"sip:{hop}" if hop else ""


def _int(key: str, low: int, high: int):
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"'{key}' must be a whole number, not {value!r}")
        if not low <= value <= high:
            raise ConfigError(f"'{key}' must be between {low} and {high}, not {value}")
        return value
    return check


def _number(key: str, low: float, high: float):
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"'{key}' must be a number, not {value!r}")
        if not low <= value <= high:
            raise ConfigError(f"'{key}' must be between {low} and {high}, not {value}")
        return float(value)
    return check


def _choice(key: str, choices: tuple[str, ...]):
    def check(value: Any) -> str:
        if value not in choices:
            raise ConfigError(f"'{key}' must be one of {', '.join(choices)}, not {value!r}")
        return value
    return check


def _bool(key: str):
    def check(value: Any) -> bool:
        if not isinstance(value, bool):
            raise ConfigError(f"'{key}' must be true or false, not {value!r}")
        return value
    return check


def _host(key: str):
    def check(value: Any) -> str:
        if value is None:
            return ""
        if not isinstance(value, str) or any(c.isspace() for c in value):
            raise ConfigError(f"'{key}' must be a host name (host or host:port), not {value!r}")
        return value
    return check


_PATH_TEXT = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=:@/%-]*")


def _document_path(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise ConfigError("'xcap_document_path' must be a path starting with /")
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(value) if f is not None}
    except ValueError:
        raise ConfigError("'xcap_document_path' has an unbalanced { or }") from None
    if fields - {"xui", "user", "domain"} or not ("xui" in fields or {"user", "domain"} <= fields):
        raise ConfigError("'xcap_document_path' must use {xui}, or {user} and {domain}, and"
                          " no other placeholder")
    literal = "".join(text for text, _, _, _ in string.Formatter().parse(value))
    if not _PATH_TEXT.fullmatch(literal):
        raise ConfigError("'xcap_document_path' may hold only characters of a URL path"
                          " (%-encode the others)")
    return value


def _domains(key: str):
    def check(value: Any) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(
                isinstance(v, str) and v and not any(c.isspace() or c in "@:/" for c in v)
                for v in value):
            raise ConfigError(f"'{key}' must be a list of domain names, not {value!r}")
        return tuple(v.lower() for v in value)
    return check


def _routes(key: str):
    def check(value: Any) -> tuple[tuple[str, str], ...]:
        if not isinstance(value, dict):
            raise ConfigError(f"'{key}' must map domains to host:port, not {value!r}")
        routes = []
        for domain, hop in value.items():
            _domains(key)([domain])
            _hostport(f"{key}: {domain}")(hop)
            routes.append((domain.lower(), hop))
        return tuple(routes)
    return check


def _hostport(key: str):
    def check(value: Any) -> str:
        host, _, port = value.rpartition(":") if isinstance(value, str) else ("", "", "")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"'{key}' must be host:port, not {value!r}")
        return value
    return check


def _string(key: str):
    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise ConfigError(f"'{key}' must be a string, not {value!r}")
        return value
    return check


def _secret(key: str, shortest: int):
    def check(value: Any) -> str:
        if value is None or value == "":
            return ""
        if not isinstance(value, str) or len(value) < shortest:
            raise ConfigError(f"'{key}' must be a string of at least {shortest} characters"
                              " (or left out)")
        return value
    return check


def _networks(key: str):
    def check(value: Any) -> tuple:
        if value is None:
            return ()
        if not isinstance(value, list):
            raise ConfigError(f"'{key}' must be a list of addresses or networks, not {value!r}")
        try:
            return tuple(ipaddress.ip_network(str(v), strict=False) for v in value)
        except ValueError as e:
            raise ConfigError(f"'{key}': {e}") from None
    return check


def parse_db_url(value: Any) -> DatabaseUrl:
    if not isinstance(value, str):
        raise ConfigError(f"'db_url' must be a string like mysql://user:pass@host:3306/db, not {value!r}")
    scheme, _, rest = value.partition("://")
    if scheme not in ("mysql", "mariadb"):
        raise ConfigError("'db_url' must start with mysql://")
    # The authority by hand: urlsplit wants one host, a list has several.
    netloc, _, tail = rest.partition("/")
    userinfo, _, hostlist = netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    parts = urllib.parse.urlsplit("mysql://host/" + tail)
    database = urllib.parse.unquote(parts.path.lstrip("/"))
    if not database or "/" in database:
        raise ConfigError("'db_url' must name one database: mysql://user:pass@host:3306/db")
    hosts = _db_hosts(hostlist)
    query = urllib.parse.parse_qs(parts.query)
    unknown = set(query) - {"unix_socket"}
    if unknown:
        raise ConfigError(f"'db_url' has unknown option {sorted(unknown)[0]!r} (only unix_socket is known)")
    return DatabaseUrl(
        user=urllib.parse.unquote(user),
        password=urllib.parse.unquote(password),
        host=hosts[0][0],
        port=hosts[0][1],
        database=database,
        unix_socket=query.get("unix_socket", [None])[0],
        hosts=hosts if len(hosts) > 1 else (),
    )


def _tokens(key: str):
    def check(value: Any) -> tuple[str, ...]:
        if not isinstance(value, list) or not value or \
                not all(isinstance(v, str) and re.fullmatch(r"[a-z0-9.-]+", v) for v in value):
            raise ConfigError(f"'{key}' must be a non-empty list of event package names,"
                              f" not {value!r}")
        return tuple(value)
    return check


def _db_hosts(text: str) -> tuple[tuple[str, int], ...]:
    """host:port,host:port (a Galera cluster's nodes, in the order to try
    them); [v6]:port; the port defaults to 3306, the host to 127.0.0.1."""
    hosts = []
    for item in text.split(","):
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else rest
        else:
            host, _, port = item.partition(":")
        if not port:
            port = "3306"
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError("'db_url' has a port that is not a number") from None
        if not host and len(text.split(",")) > 1:
            raise ConfigError("'db_url' names an empty host in its list of hosts")
        hosts.append((urllib.parse.unquote(host) or "127.0.0.1", int(port)))
    return tuple(hosts)


_DAY = 86400
_CHECKS = {
    "db_url": parse_db_url,
    "default_expires": _int("default_expires", 1, 30 * _DAY),
    "default_priority_percentage": _int("default_priority_percentage", 0, 100),
    "pa_domain": _host("pa_domain"),
    "min_expires": _int("min_expires", 0, 30 * _DAY),
    "max_subscription_expiration": _int("max_subscription_expiration", 1, 30 * _DAY),
    "max_publish_expiration": _int("max_publish_expiration", 1, 30 * _DAY),
    "timer_interval": _int("timer_interval", 1, 3600),
    "gauges_interval": _int("gauges_interval", 1, 3600),
    "auth": _choice("auth", AUTH_MODES),
    "winfo_auth": _choice("winfo_auth", WINFO_AUTH_MODES),
    "db_timeout": _number("db_timeout", 0.1, 60),
    "db_sync_wait": _int("db_sync_wait", 0, 15),
    "retry_after": _int("retry_after", 1, 3600),
    "notify_timeout": _int("notify_timeout", 1, 3600),
    "ignore_408_on_notify": _bool("ignore_408_on_notify"),
    "max_subscriptions_per_watcher": _int("max_subscriptions_per_watcher", 1, 1_000_000),
    "max_subscriptions_per_presentity": _int("max_subscriptions_per_presentity", 1, 1_000_000),
    "auth_rules_refresh_time": _int("auth_rules_refresh_time", 1, 30 * _DAY),
    "xcap_document_path": _document_path,
    "xcap_timeout": _number("xcap_timeout", 0.1, 30),
    "xcap_auth": _choice("xcap_auth", ("digest", "none")),
    "xcap_nonce_secret": _secret("xcap_nonce_secret", 16),
    "metrics_sources": _networks("metrics_sources"),
    "xmpp_domains": _domains("xmpp_domains"),
    "xmpp_component": _host("xmpp_component"),
    "xmpp_component_server": _hostport("xmpp_component_server"),
    "xmpp_component_secret": _string("xmpp_component_secret"),
    "xmpp_sip_domain": _host("xmpp_sip_domain"),
    "xmpp_max_resources": _int("xmpp_max_resources", 1, 1000),
    "max_publication_elements": _int("max_publication_elements", 1, 10000),
    "max_publications": _int("max_publications", 1, 1000),
    "max_document_bytes": _int("max_document_bytes", 4096, 16 * 1024 * 1024),
    "cache_bytes": _int("cache_bytes", 0, 1024 * 1024 * 1024),
    "max_winfo_entries_per_watcher": _int("max_winfo_entries_per_watcher", 1, 1000),
    "max_display_name": _int("max_display_name", 0, 128),
    "notify_udp_mtu": _int("notify_udp_mtu", 512, UDP_MAX_PAYLOAD),
    "event_packages": _tokens("event_packages"),
    "rls_max_document_bytes": _int("rls_max_document_bytes", 1024, 16 * 1024 * 1024),
    "rls_max_members": _int("rls_max_members", 1, 10000),
    "rls_max_depth": _int("rls_max_depth", 1, 30),
    "rls_notify_interval": _int("rls_notify_interval", 0, 3600),
    "rls_max_notify_bytes": _int("rls_max_notify_bytes", 1024, 16 * 1024 * 1024),
    "local_domains": _domains("local_domains"),
    "backend_routes": _routes("backend_routes"),
    "backend_expires": _int("backend_expires", 10, 30 * _DAY),
    "backend_timeout": _int("backend_timeout", 1, 300),
    "backend_retry_min": _int("backend_retry_min", 1, _DAY),
    "backend_retry_max": _int("backend_retry_max", 1, _DAY),
    "max_backend_subscriptions_per_subscriber": _int(
        "max_backend_subscriptions_per_subscriber", 1, 100_000),
}


def settings_from_mapping(data: Any) -> Settings:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("the settings must be a YAML mapping of key: value")
    for key in data:
        if key not in _CHECKS:
            raise ConfigError(f"unknown key {key!r}")
    if "db_url" not in data:
        raise ConfigError("'db_url' is required (mysql://user:pass@host:3306/db)")
    values = {key: _CHECKS[key](value) for key, value in data.items()}
    settings = Settings(**values)
    if settings.min_expires > settings.max_subscription_expiration:
        raise ConfigError("'min_expires' must not exceed 'max_subscription_expiration'")
    if settings.xmpp_component and not (settings.xmpp_component_secret
                                        and settings.xmpp_sip_domain):
        raise ConfigError("'xmpp_component' needs 'xmpp_component_secret' and"
                          " 'xmpp_sip_domain'")
    if settings.backend_retry_min > settings.backend_retry_max:
        raise ConfigError("'backend_retry_min' must not exceed 'backend_retry_max'")
    return settings


def load_settings(path: str | None) -> Settings:
    if not path:
        raise ConfigError("no settings file: set PA_CONFIG to the path of the YAML settings")
    try:
        with open(path, "rb") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read settings file {path}: {e.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path} is not valid YAML{where}") from None
    try:
        return settings_from_mapping(data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
