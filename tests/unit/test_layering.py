"""The layering, read from the code with ast: pa_handlers never talks to
Kamailio, the store knows no role, format or gateway module, all SQL is in
the store, event names are spelled in the package registry only, and the
modules import one another without cycles."""

import ast
import os
import re

from harness import ROOT

PACKAGE = os.path.join(ROOT, "pa_handlers")
STORE = os.path.join(PACKAGE, "store")
# What the store may build on: the plain records and the settings' types.
STORE_MAY_IMPORT = {"pa_handlers.records", "pa_handlers.config"}
SQL = re.compile(r"\b(SELECT|INSERT INTO|UPDATE pa_|DELETE FROM)\b")


def modules() -> dict[str, str]:
    """module name -> path, for every module of pa_handlers."""
    found = {}
    for top, _, names in os.walk(PACKAGE):
        for name in names:
            if name.endswith(".py"):
                path = os.path.join(top, name)
                rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                found[rel.removesuffix(".__init__")] = path
    return found


def imports(module: str, path: str) -> set[str]:
    """The pa_handlers modules (and KSR) that `module` imports."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            name = (base + "." + node.module if node.module else base) if node.level \
                else node.module
            found.add(name)
            # `from . import x` imports the module x.
            found.update(f"{name}.{alias.name}" for alias in node.names)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: {i for i in imports(m, p) if i in mods} for m, p in mods.items()}


def test_pa_handlers_never_imports_ksr():
    for module, path in modules().items():
        assert not {i for i in imports(module, path) if i.split(".")[0] == "KSR"}, module


def test_the_store_imports_no_role_format_or_gateway_module():
    for module, deps in graph().items():
        if module.startswith("pa_handlers.store"):
            outside = {d for d in deps if not d.startswith("pa_handlers.store")
                       and d != "pa_handlers"}
            assert outside <= STORE_MAY_IMPORT, (module, outside - STORE_MAY_IMPORT)


def test_all_sql_is_in_the_store():
    for module, path in modules().items():
        if not module.startswith("pa_handlers.store"):
            assert not SQL.search(open(path, encoding="utf-8").read()), module


def test_event_names_are_spelled_in_the_registry_only():
    for module, path in modules().items():
        if module == "pa_handlers.packages":
            continue
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
            if isinstance(node, ast.Constant) and node.value in ("presence", "presence.winfo"):
                # XML element and XMPP stanza names are not event names.
                assert module in ("pa_handlers.xmpp_mapping", "pa_handlers.xmpp_component"), \
                    (module, node.lineno)


def test_no_import_cycles():
    deps = graph()
    state: dict[str, int] = {}

    def visit(module, trail):
        state[module] = 1
        for dep in deps[module]:
            if dep == "pa_handlers" or dep not in deps:
                continue
            assert state.get(dep) != 1, " -> ".join(trail + [dep])
            if dep not in state:
                visit(dep, trail + [dep])
        state[module] = 2

    for module in deps:
        if module not in state:
            visit(module, [module])


def test_the_store_files_stay_small():
    for name in os.listdir(STORE):
        if name.endswith(".py"):
            with open(os.path.join(STORE, name), encoding="utf-8") as f:
                assert sum(1 for _ in f) <= 320, name
