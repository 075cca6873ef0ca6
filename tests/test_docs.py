"""The docs stay whole: every setting the code reads is in the reference, every page is in the
nav, the strict build fails on a broken link, and the README stays a newcomer's page."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

import mkdocs_hooks

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def nav_pages(nav) -> set[str]:
    pages = set()
    for entry in nav:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        pages.update(nav_pages(value) if isinstance(value, list) else {value})
    return pages


def build(config: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )


def copy_of_the_docs(tmp_path: Path) -> Path:
    """mkdocs.yml, docs/, the hook and what they read, in a tree a test may break."""
    for name in ("mkdocs.yml", "mkdocs_hooks.py", "controlpanel/settings.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(DOCS, tmp_path / "docs", symlinks=True)
    shutil.copytree(ROOT / "static" / "screenshots", tmp_path / "static" / "screenshots")
    return tmp_path


def test_every_setting_the_code_reads_has_a_row_in_the_settings_reference():
    assert mkdocs_hooks.missing_settings() == []


def test_the_reference_check_finds_every_kind_of_read_and_a_removed_row(tmp_path):
    read = mkdocs_hooks.settings_read_by_code(mkdocs_hooks.SETTINGS_PY.read_text())
    # One of each helper, and the NAME_FILE an envsecret reads besides NAME.
    assert {"DEBUG", "Q_WORKERS", "POD_IDLE_STOP_HOURS", "SNAPSHOT_STORE_URL", "METRICS_TOKEN"} <= read
    assert {"SECRET_KEY_FILE", "NOTIFY_URLS_FILE", "SESSIONS_API_TOKEN_FILE"} <= read
    # The default of one setting is another setting read inside the call.
    assert "AWS_DEFAULT_REGION" in read

    reference = mkdocs_hooks.SETTINGS_MD.read_text()
    without_row = "\n".join(line for line in reference.splitlines() if not line.startswith("| `POD_COMMAND`"))
    (tmp_path / "settings.md").write_text(without_row)
    assert mkdocs_hooks.missing_settings(settings_md=tmp_path / "settings.md") == ["POD_COMMAND"]


def test_every_docs_page_is_in_the_nav_and_every_nav_entry_is_a_page():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    pages = {str(path.relative_to(DOCS)) for path in DOCS.rglob("*.md")}
    assert nav_pages(config["nav"]) == pages


def test_the_docs_build_strictly(tmp_path):
    result = build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "site" / "settings.html").exists()
    # No page asks the network for fonts or scripts.
    for page in (tmp_path / "site").glob("*.html"):
        assert "fonts.googleapis.com" not in page.read_text(), page.name


def test_the_strict_build_fails_on_a_broken_link_and_on_a_setting_missing_from_the_reference(tmp_path):
    tree = copy_of_the_docs(tmp_path / "broken-link")
    pods = tree / "docs" / "pods.md"
    pods.write_text(pods.read_text() + "\nSee [gone](no-such-page.md) and [rules](volumes.md#no-such-anchor).\n")
    result = build(tree / "mkdocs.yml", tmp_path / "site-1")
    assert result.returncode != 0
    assert "'no-such-page.md', but the target is not found" in result.stderr
    assert "does not contain an anchor '#no-such-anchor'" in result.stderr

    tree = copy_of_the_docs(tmp_path / "missing-setting")
    reference = tree / "docs" / "settings.md"
    lines = reference.read_text().splitlines()
    reference.write_text("\n".join(line for line in lines if not line.startswith("| `POD_COMMAND`")) + "\n")
    result = build(tree / "mkdocs.yml", tmp_path / "site-2")
    assert result.returncode != 0
    assert "reads POD_COMMAND but docs/settings.md has no row for it" in result.stderr


def test_make_test_and_make_docs_build_the_docs_strictly():
    recipes = subprocess.run(
        ["make", "--dry-run", "--always-make", "--old-file=.venv/.installed", "test", "docs"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    builds = [line for line in recipes.splitlines() if "mkdocs build" in line]
    assert len(builds) == 2
    # --quiet would drop the warnings strict mode counts, and a broken link would pass.
    assert all("--strict" in line and "--quiet" not in line and " -q" not in line for line in builds)


def test_the_readme_is_a_newcomers_page_that_links_every_docs_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    first_block = re.search(r"```sh\n(.*?)```", readme, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.splitlines()]
    assert commands == ["make run", "make test"]

    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
    images = [target for target in targets if target.endswith(".png")]
    assert len(images) == 3
    for target in targets:
        if "://" not in target:
            assert (ROOT / target).exists(), target
    linked = {target for target in targets if target.startswith("docs/")}
    assert {f"docs/{path.relative_to(DOCS)}" for path in DOCS.rglob("*.md")} <= linked


def test_the_production_block_in_the_docs_is_the_one_the_readme_runs():
    """tests/dashboard/test_production.py runs the README's block; the docs page shows the same."""
    marker = "<!-- production block:"

    def block(path: Path) -> str:
        text = path.read_text()
        assert text.count(marker) == 1, f"{path.name} needs exactly one production block"
        return text[text.index(marker) :].split("```sh\n", 1)[1].split("\n```", 1)[0]

    assert block(ROOT / "docs" / "production.md") == block(ROOT / "README.md")
