"""Bad settings stop Kamailio at start with one clear line naming the
problem, never a bare traceback."""

import os

import pytest

from conftest import settings
from harness import Kamailio, ScratchDatabase
from pa_handlers.store import SCHEMA_VERSION


@pytest.fixture(scope="module")
def empty_database():
    """A database without our schema (Kamailio's registrar tables stay)."""
    db = ScratchDatabase()
    with db.connect() as conn, conn.cursor() as cur:
        cur.execute("SHOW TABLES LIKE 'pa\\_%'")
        for (table,) in cur.fetchall():
            cur.execute(f"DROP TABLE `{table}`")
    yield db
    db.drop()


def _refused(k: Kamailio) -> str:
    k.children = None  # the config's own default applies
    try:
        k.start(wait=False)
        assert k.wait_exit(20) != 0
        return k.log()
    finally:
        k.cleanup()


def _error_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if "pa: configuration error" in line]


@pytest.mark.parametrize("content, key", [
    ("{db_url: 'mysql://a:b@127.0.0.1/x', colour: blue}\n", "colour"),
    ("{db_url: 'mysql://a:b@127.0.0.1/x', default_expires: -1}\n", "default_expires"),
    ("{db_url: 'mysql://a:b@127.0.0.1/x', auth: maybe}\n", "auth"),
    ("{default_expires: 60}\n", "db_url"),
    ("db_url: [unclosed\n", "not valid YAML"),
])
def test_bad_settings_stop_kamailio_naming_the_key(database, content, key):
    k = Kamailio(settings(database))
    k.write_settings(content)
    log = _refused(k)
    lines = _error_lines(log)
    assert len(lines) == 1, log[-2000:]
    assert key in lines[0]
    assert "Traceback" not in log


def test_missing_settings_file_stops_kamailio(database):
    k = Kamailio(settings(database))
    os.unlink(k.config_path)
    lines = _error_lines(_refused(k))
    assert len(lines) == 1 and "cannot read settings file" in lines[0]


def test_database_without_schema_stops_kamailio(empty_database):
    k = Kamailio(settings(empty_database))
    log = _refused(k)
    assert "has no presence agent schema: run `pa-admin db upgrade`" in log
    assert "Traceback" not in log


@pytest.mark.parametrize("version, message", [
    (0, f"schema is version 0, this plugin needs {SCHEMA_VERSION}: run `pa-admin db upgrade`"),
    (99, f"schema is version 99, newer than this plugin knows ({SCHEMA_VERSION}):"
         " upgrade the plugin"),
])
def test_a_schema_of_another_version_stops_kamailio(version, message):
    db = ScratchDatabase()
    try:
        db.query("DELETE FROM pa_schema")
        db.query("INSERT INTO pa_schema (version) VALUES (%s)", (version,))
        log = _refused(Kamailio(settings(db)))
        assert message in log
        assert "Traceback" not in log
    finally:
        db.drop()
