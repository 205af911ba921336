"""The database schema's version: which numbered files of sql/ a database
has, applying the missing ones, and whether this code can run on it.

Each file sql/NNN_name.sql takes the schema from version NNN-1 to NNN and
records NNN in pa_schema; files are never edited once released.
"""

from __future__ import annotations

import glob
import os
import sys

from .store import SCHEMA_VERSION, Admin

UPGRADE_COMMAND = "pa-admin db upgrade"

# Kamailio's own tables that kamailio.cfg.sample needs (registrar, auth_db),
# from the kamailio-mysql-modules package: (a table it creates, its file).
KAMAILIO_SQL = "/usr/share/kamailio/mysql"
KAMAILIO_TABLES = (("version", "standard-create.sql"), ("location", "usrloc-create.sql"),
                   ("subscriber", "auth_db-create.sql"))


def sql_dir() -> str:
    """sql/ beside the package (a checkout), or where pip installed it."""
    candidates = [os.environ.get("PA_SQL_DIR", ""),
                  os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "sql"),
                  os.path.join(sys.prefix, "share", "presence-agent", "sql")]
    for candidate in candidates:
        if candidate and glob.glob(os.path.join(candidate, "[0-9][0-9][0-9]_*.sql")):
            return candidate
    raise FileNotFoundError("the schema files (sql/NNN_*.sql) are not installed;"
                            " set PA_SQL_DIR to their folder")


def files() -> list[tuple[int, str]]:
    """The numbered files: (version, path), in order."""
    return [(int(os.path.basename(path)[:3]), path)
            for path in sorted(glob.glob(os.path.join(sql_dir(), "[0-9][0-9][0-9]_*.sql")))]


def problem(version: int | None) -> str | None:
    """Why the plugin cannot run on a database at `version` (None: no
    schema at all), or None when it can."""
    if version is None:
        return f"the database has no presence agent schema: run `{UPGRADE_COMMAND}`"
    if version < SCHEMA_VERSION:
        return (f"the database schema is version {version}, this plugin needs"
                f" {SCHEMA_VERSION}: run `{UPGRADE_COMMAND}`")
    if version > SCHEMA_VERSION:
        return (f"the database schema is version {version}, newer than this plugin knows"
                f" ({SCHEMA_VERSION}): upgrade the plugin")
    return None


def upgrade(store: Admin, kamailio_tables: bool = False) -> list[str]:
    """Apply the files the database lacks; with `kamailio_tables`, also
    create Kamailio's tables of the sample configuration where missing.
    Returns the names of the files applied."""
    current = store.schema_version() or 0
    if current > SCHEMA_VERSION:
        raise ValueError(problem(current))
    applied = []
    for version, path in files():
        if version > current:
            _apply(store, path)
            applied.append(os.path.basename(path))
    if kamailio_tables:
        for table, name in KAMAILIO_TABLES:
            if not store.has_table(table):
                _apply(store, os.path.join(KAMAILIO_SQL, name))
                applied.append(name)
    return applied


def _apply(store: Admin, path: str) -> None:
    with open(path, encoding="utf-8") as f:
        store.apply_sql(f.read())
