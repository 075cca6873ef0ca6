"""Checks the docs build runs (mkdocs `hooks:`), shared with tests/test_docs.py.

The settings reference is written by hand, so nothing but a check keeps it whole: every
environment variable controlpanel/settings.py reads must have a row in docs/settings.md.
A missing one is a warning, which the strict build (`make docs`, `make test`) turns into a
failed build.
"""

import ast
import logging
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent
SETTINGS_PY = ROOT / "controlpanel" / "settings.py"
SETTINGS_MD = ROOT / "docs" / "settings.md"

# settings.py reads the environment only through these helpers (and os.environ for the odd one).
ENV_HELPERS = {"envstr", "envbool", "envint", "envfloat", "envsecret"}
# envsecret(NAME) also reads NAME_FILE, so the reference must name both.
SECRET_HELPERS = {"envsecret"}
ENV_NAME = re.compile(r"`([A-Z][A-Z0-9_]*)`")

log = logging.getLogger("mkdocs.hooks.settings_reference")


def _called_name(call: ast.Call) -> str:
    func = call.func
    if isinstance(func, ast.Name):
        return func.id
    # os.environ.get("X") and os.getenv("X")
    if isinstance(func, ast.Attribute):
        owner = func.value
        if isinstance(owner, ast.Attribute) and owner.attr == "environ" and func.attr == "get":
            return "os.environ.get"
        if isinstance(owner, ast.Name) and owner.id == "os" and func.attr == "getenv":
            return "os.getenv"
    return ""


def settings_read_by_code(source: str) -> set[str]:
    """The environment variable names a settings module reads, found in its syntax tree."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ":
            if isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
                names.add(node.slice.value)
            continue
        if not isinstance(node, ast.Call) or not node.args:
            continue
        called = _called_name(node)
        first = node.args[0]
        if called not in ENV_HELPERS | {"os.environ.get", "os.getenv"}:
            continue
        if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
            continue
        names.add(first.value)
        if called in SECRET_HELPERS:
            names.add(f"{first.value}_FILE")
    return names


def settings_in_reference(markdown: str) -> set[str]:
    """The variable names in the first column of the reference's tables."""
    names = set()
    for line in markdown.splitlines():
        if not line.startswith("|"):
            continue
        first_cell = line.strip("|").split("|", 1)[0]
        names.update(ENV_NAME.findall(first_cell))
    return names


def missing_settings(settings_py: Path = SETTINGS_PY, settings_md: Path = SETTINGS_MD) -> list[str]:
    read = settings_read_by_code(settings_py.read_text())
    documented = settings_in_reference(settings_md.read_text())
    return sorted(read - documented)


def on_pre_build(config, **kwargs):
    for name in missing_settings():
        log.warning(
            "controlpanel/settings.py reads %s but docs/settings.md has no row for it: "
            "add it with its default and meaning",
            name,
        )
