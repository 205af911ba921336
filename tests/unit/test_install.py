"""A fresh machine has only what bin/pa-install installs: every Kamailio
module that anything in the repository loads (configurations, tests,
benchmarks, the README's examples) must come from one of its packages."""

import glob
import os
import re
import shutil
import subprocess

import pytest

from harness import ROOT

# loadmodule "tm.so", loadmodule("tm"), loadmodule "/path/tm.so" in a
# configuration or in a Python string that writes one.
LOADMODULE = re.compile(r'loadmodule\s*\(?\s*"(?:[^"]*/)?([A-Za-z0-9_]+)(?:\.so)?"')


# Not part of the repository, where a copy without .git (the Docker image)
# has them.
_NOT_OURS = {".git", ".tox", ".venv", "__pycache__", "out", "node_modules"}


def tracked_files():
    """The repository's files: git's list in a clone, else the tree."""
    if shutil.which("git") and os.path.isdir(os.path.join(ROOT, ".git")):
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
        return [os.path.join(ROOT, p) for p in out.stdout.decode().split("\0") if p]
    files = []
    for top, dirs, names in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in _NOT_OURS]
        files += [os.path.join(top, name) for name in names]
    return files


def loaded_modules():
    """module name -> files that load it."""
    modules: dict[str, set[str]] = {}
    for path in tracked_files():
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (UnicodeDecodeError, IsADirectoryError, FileNotFoundError):
            continue
        for name in LOADMODULE.findall(text):
            modules.setdefault(name, set()).add(os.path.relpath(path, ROOT))
    return modules


def installed_packages():
    out = subprocess.run([os.path.join(ROOT, "bin", "pa-install"), "--print-packages"],
                         capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def module_directory():
    found = glob.glob("/usr/lib/*/kamailio/modules/tm.so") + \
        glob.glob("/usr/lib/kamailio/modules/tm.so")
    return os.path.dirname(found[0]) if found else None


def test_the_pattern_finds_every_spelling_of_loadmodule():
    text = 'loadmodule "tm.so"\nloadmodule("sl")\n  loadmodule "/usr/lib/kamailio/modules/pv.so"'
    assert LOADMODULE.findall(text) == ["tm", "sl", "pv"]


def test_the_repository_loads_the_modules_the_tests_rely_on():
    modules = loaded_modules()
    # The sample, the native comparison (bench/, import-native tests).
    for name in ("app_python3", "db_mysql", "registrar", "presence", "presence_xml"):
        assert name in modules, name


@pytest.mark.skipif(shutil.which("dpkg") is None, reason="not a Debian system")
def test_every_loaded_module_comes_from_a_package_the_install_script_installs():
    moddir = module_directory()
    if moddir is None:
        pytest.skip("Kamailio is not installed: run bin/pa-install")
    packages = installed_packages()
    problems = []
    for name, where in sorted(loaded_modules().items()):
        so = os.path.join(moddir, name + ".so")
        if not os.path.exists(so):
            problems.append(f"{name} (loaded by {', '.join(sorted(where))}) is not installed: "
                            "no package of bin/pa-install provides it")
            continue
        owner = subprocess.run(["dpkg", "-S", so], capture_output=True, text=True)
        package = owner.stdout.split(":", 1)[0].strip()
        if owner.returncode != 0 or package not in packages:
            problems.append(f"{name} comes from {package or 'no package'}, "
                            "which bin/pa-install does not install")
    assert not problems, "\n".join(problems)


@pytest.mark.skipif(shutil.which("dpkg") is None, reason="not a Debian system")
def test_the_galera_cluster_of_the_tests_runs_on_what_the_install_script_installs():
    """tests/galera.py loads the Galera provider and its state transfer
    runs rsync and ss (or lsof): each must come from a package bin/pa-install
    installs."""
    from galera import PROVIDER
    packages = installed_packages()
    problems = []
    for path in (PROVIDER, shutil.which("rsync") or "/usr/bin/rsync",
                 shutil.which("ss") or "/usr/bin/ss"):
        owner = subprocess.run(["dpkg", "-S", os.path.realpath(path)], capture_output=True,
                               text=True)
        if owner.returncode != 0:       # /usr/bin/ss is /bin/ss on a merged /usr
            owner = subprocess.run(["dpkg", "-S", path.replace("/usr/bin/", "/bin/")],
                                   capture_output=True, text=True)
        package = owner.stdout.split(":", 1)[0].strip()
        if owner.returncode != 0 or package not in packages:
            problems.append(f"{path} comes from {package or 'no package'}, "
                            "which bin/pa-install does not install")
    assert not problems, "\n".join(problems)
