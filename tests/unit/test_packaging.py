"""What ships beside the code stays in step with it: the schema files and
the version the code expects, the statistics declarations, the console
script, and the Docker image and CI workflow built on the same scripts."""

import os
import tomllib

import yaml

from harness import ROOT
from pa_handlers import admin, metrics, schema
from pa_handlers.store import SCHEMA_VERSION


def read(*path):
    with open(os.path.join(ROOT, *path), encoding="utf-8") as f:
        return f.read()


def test_the_newest_schema_file_is_the_version_the_code_expects():
    versions = [version for version, _ in schema.files()]
    assert versions == list(range(1, len(versions) + 1)), "numbered 001, 002, ... without gaps"
    assert versions[-1] == SCHEMA_VERSION
    for version, path in schema.files():
        assert f"INSERT INTO pa_schema (version) VALUES ({version});" in read(path)


def test_schema_problems_name_the_command_to_run():
    assert schema.problem(SCHEMA_VERSION) is None
    assert "pa-admin db upgrade" in schema.problem(None)
    assert "pa-admin db upgrade" in schema.problem(SCHEMA_VERSION - 1)
    assert "upgrade the plugin" in schema.problem(SCHEMA_VERSION + 1)


def test_the_statistics_declarations_are_generated_from_the_code():
    assert read("kemi", "pa-statistics.cfg") == metrics.declarations(), \
        "run: python3 -m pa_handlers.metrics > kemi/pa-statistics.cfg"
    assert len(set(metrics.names())) == len(metrics.names())


def test_both_configurations_declare_the_statistics():
    assert 'import_file "kemi/pa-statistics.cfg"' in read("kamailio.cfg.sample")
    assert 'import_file "pa-statistics.cfg"' in read("kemi", "kamailio-native.cfg")


def test_the_console_script_is_pa_admin_main():
    project = tomllib.loads(read("pyproject.toml"))["project"]
    assert project["scripts"] == {"pa-admin": "pa_handlers.admin:main"}
    assert callable(admin.main)


def test_image_compose_and_workflow_use_the_same_scripts():
    assert "bin/pa-install" in read("Dockerfile")
    assert read(".ci", "run").count("bin/pa-install") == 1
    compose = yaml.safe_load(read("docker-compose.yml"))["services"]
    assert compose["kamailio"]["build"] == "."
    assert "@db:3306/" in compose["kamailio"]["environment"]["PA_DB_URL"]
    steps = yaml.safe_load(read(".github", "workflows", "test.yml"))["jobs"]["test"]["steps"]
    commands = [step.get("run", "") for step in steps]
    assert "docker build -t presence-agent ." in commands
    assert "docker run --rm presence-agent .ci/run" in commands
    # Inside the image .ci/run runs the suite, not Docker again.
    assert "PA_CI_IN_CONTAINER=1" in read("Dockerfile")
    assert 'if [ -z "${PA_CI_IN_CONTAINER:-}" ]; then\n  .ci/fresh-container' in read(".ci", "run")


def test_kamailio_starts_with_sized_memory():
    """bin/pa-run, and the image through it, give Kamailio explicit shared
    and private memory (-m, -M), not its 64 MB default: each NOTIFY in
    flight lives in shared memory."""
    run = read("bin", "pa-run")
    [command] = [line for line in run.splitlines() if line.startswith("kamailio ")]
    assert command.endswith('-m "$shm_mb" -M "$pkg_mb" -x "$allocator"')
    assert "shm_mb=${PA_SHM_MB:-256}" in run and "pkg_mb=${PA_PKG_MB:-16}" in run
    # TLSF, not Debian's default debugging allocator (qm).
    assert "allocator=${PA_ALLOCATOR:-tlsf}" in run
    assert "exec bin/pa-run" in read("Dockerfile")
    assert "PA_SHM_MB=256 PA_PKG_MB=16 PA_ALLOCATOR=tlsf" in read("Dockerfile")
