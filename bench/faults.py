"""Report: faults injected and hostile inputs tried, and what survived them.

    .venv/bin/python bench/faults.py                 # the reliability tests and every case's tests, then the tables
    .venv/bin/python bench/faults.py -- -k sigkill   # pass pytest options after --

Runs `pytest tests/reliability` (real dockerd, S3 servers, killed worker processes) and the
test files of every case (CASES below: issues #15, #21 and #23) with `FAULT_REPORT` pointing at
a temporary file. Tests record there what they tried and what it cost, measured afterwards
(the `fault_point`, `bad_input` and `harm` fixtures of tests/faults.py), and this file, loaded
into the run as a pytest plugin, records every test's outcome. Printed:

- the cases, one row each (the tests that prove it, by node-id pattern): tests run and passed,
  hangs (failed by the per-test timeout), errored (a test that failed or errored, an input not
  refused cleanly, a fault not survived), harm records (issue #21's measurements), bytes lost,
  held items deleted, panel files touched, operations run twice, files touched outside the roots;
- fault points tried, survived (invariants held and the retry finished), bytes lost;
- bad inputs tried, rejected cleanly (a clear message, no traceback), files touched outside roots;
- harm measurements by area, and a closing line of totals.

Exits non-zero when a test failed, when a case has no passing test (a row of zero tests proves
nothing), when an issue #21 case's tests recorded no harm measurement (neither does a row that
measured nothing), when any byte was lost, any held item deleted, any panel file or any file
outside a root touched, any operation run twice, or when nothing was recorded at all.
"""

import argparse
import fnmatch
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Case:
    """One case and the tests that prove it: `path-glob` or `path-glob::name-regex`. A case with
    `harms` is one of issue #21's harms (data lost, held items deleted, panel files touched, work
    run twice): its tests must record what they measured with the `harm` fixture (tests/faults.py),
    or the row proves nothing."""

    label: str
    tests: tuple[str, ...]
    harms: bool = False

    def matches(self, nodeid: str) -> bool:
        path, _, name = nodeid.partition("::")
        for pattern in self.tests:
            glob, _, regex = pattern.partition("::")
            if fnmatch.fnmatch(path, glob) and (not regex or re.search(regex, name)):
                return True
        return False

    def matches_file(self, path: str) -> bool:
        return any(fnmatch.fnmatch(path, pattern.partition("::")[0]) for pattern in self.tests)

    def files(self) -> set[str]:
        return {pattern.partition("::")[0] for pattern in self.tests}


BAD_INPUT = "tests/reliability/test_bad_input.py"
CASES = [
    Case(
        "FIFO and special files never block",
        (
            "tests/mixjobs/test_special_files.py::fifo|special|socket|json",
            "tests/volumes/test_hostile_files.py::fifo",
            "tests/separations/test_hostile_files.py::special_files",
            f"{BAD_INPUT}::blocks_on_a_fifo",
        ),
    ),
    Case(
        "unreadable folder",
        (
            "tests/volumes/test_hostile_files.py::unreadable|cannot_read|at_least",
            "tests/separations/test_hostile_files.py::unreadable|cannot_be_removed",
        ),
    ),
    Case("vanishing root", ("tests/volumes/test_hostile_files.py::moves_during|removed_during",)),
    Case(
        "refused system roots",
        ("tests/volumes/test_refused_urls.py::system|own_data|symlink|normalised|before_the_rule|mount",),
    ),
    Case("full snapshot store", ("tests/pods/test_snapshot_full.py",)),
    Case("failed stream names its volume", ("tests/pods/test_snapshot_faults.py::names_the_volume",)),
    # Rows below for mix jobs merged from the mix-job helper's proposal (tests/mixjobs).
    Case(
        "lock-less writer",
        (
            "tests/mixjobs/test_lockless_writer.py",
            "tests/mixjobs/test_cleanup.py::killed_with_files_set_aside",
            "tests/mixjobs/test_guards.py::renamed_in|newer_job",
        ),
    ),
    Case("over-large job", ("tests/mixjobs/test_special_files.py::over_large",)),
    Case(
        "planted-bug guards",
        ("tests/mixjobs/test_guards.py", "tests/pods/test_snapshot_faults.py::changed_in_the_store"),
    ),
    Case("login limiting", ("tests/dashboard/test_login.py", "tests/dashboard/test_login_race.py")),
    Case("admin-form bad input", (f"{BAD_INPUT}::test_admin_",)),
    Case(
        "missing Modal volume",
        (f"{BAD_INPUT}::modal_volume", "tests/volumes/test_refused_urls.py::missing_modal|modal_volume_deleted"),
    ),
    Case("NUL in list filters on PostgreSQL", (f"{BAD_INPUT}::nul_bytes",)),
    # issue #21: production block
    Case("README production block under gunicorn", ("tests/dashboard/test_production.py",)),
    # issue #21: 3, the panel's own data is never in reach of a volume (added, used, removed)
    Case("panel data out of reach of volumes", ("tests/volumes/test_panel_data_refused.py",), harms=True),
    # issue #21: 7, a root renamed away and back while an entry vanishes
    Case(
        "vanishing root renamed back",
        ("tests/volumes/test_hostile_files.py::renamed_away_and_back|gone_as_the_walk_starts",),
        harms=True,
    ),
    # issue #21: 7, a killed drill's error says what is true
    Case("killed drill's error", ("tests/pods/test_drill.py::killed_midway",)),
    # issue #21: 8, planted bugs in mix jobs: set-aside without the content, open without O_NONBLOCK
    Case(
        "mix-job planted bugs",
        ("tests/mixjobs/test_guards.py::rewritten_in_place|swapped_in_between_lstat",),
        harms=True,
    ),
    # issue #21: 4, stale restic locks (a reader let go of, a killed dump, a killed restore worker)
    Case(
        "stale restic locks never block a purge",
        (
            "tests/pods/test_dedup_locks.py",
            "tests/reliability/test_killed_restic.py",
            "tests/pods/test_snapshot_dedup.py::only_the_lock_of_our_own",
        ),
        harms=True,
    ),
    # issue #21: 5, a live operation waiting silently past Q_RETRY is neither reaped nor run twice
    Case("live operation never reaped", ("tests/reliability/test_heartbeat.py",), harms=True),
    # issue #21: holds at the moment of deletion
    Case(
        "hold set mid-batch keeps its item (cleanups, API, remove-folder)",
        ("tests/audit/test_holds_at_deletion.py",),
        harms=True,
    ),
    Case(
        "hold set mid-run keeps its pod or snapshot (delete, stop, retention, sweep)",
        ("tests/pods/test_holds_at_deletion_pods.py",),
        harms=True,
    ),
    Case("hold racing a deletion on PostgreSQL", ("tests/scaleout/test_hold_race.py",), harms=True),
    # issue #23: API tokens: wrong, revoked or missing tokens, forged session POSTs, refusals
    Case(
        "API tokens and refusals",
        (
            "tests/api/test_tokens.py::revoked|wrong",
            "tests/api/test_schema_and_csrf.py::csrf",
            "tests/api/test_actions.py::refused|unknown|viewer",
        ),
    ),
    # issue #21: 1. a dedup stop over a decayed pack keeps every volume (reused copies read back)
    Case(
        "stop over a decayed pack",
        ("tests/pods/test_snapshot_readback.py::decayed_pack_keeps_every_volume",),
        harms=True,
    ),
    # issue #21: 7. a start with a wrong key makes no container or volume
    Case("start with a wrong key", ("tests/pods/test_snapshot_readback.py::wrong_key",), harms=True),
    # issue #21: 8. a compare changed in its first block reads no further (planted bug)
    Case("compare let go at the first changed block", ("tests/pods/test_snapshot_compare.py::first_block",)),
    # issue #21: 7. a snapshot that does not read back says what to do (verify, drill, start)
    Case("damaged snapshot says what to do", ("tests/pods/test_snapshot_readback.py::say_what_to_do",)),
    # issue #23: part 4 (a viewer's forged hold, an unholdable kind, a foreign `next`)
    Case("forged hold posts", ("tests/dashboard/test_hold_control.py::viewer|holdable",)),
]

# -- the plugin half: loaded into the pytest run with `-p bench.faults` -------------------------------

_lock = threading.Lock()


def _record(entry: dict) -> None:
    path = os.environ.get("FAULT_REPORT")
    if path:
        with _lock, open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps(entry, sort_keys=True) + "\n")


def pytest_runtest_logreport(report) -> None:
    """Every test's outcome, for the case rows (phases other than a passing setup/teardown)."""
    if report.when != "call" and report.outcome == "passed":
        return
    timeout = "Timeout (>" in str(report.longrepr or "")
    _record({"type": "outcome", "test": report.nodeid, "outcome": report.outcome, "timeout": timeout})


def pytest_collectreport(report) -> None:
    """A test file that cannot even be imported: its case shows it as errored."""
    if report.failed:
        _record({"type": "collect_error", "path": report.nodeid.partition("::")[0]})


# -- the report half -----------------------------------------------------------------------------


def run_tests(report: Path, extra: list[str]) -> int:
    files = sorted({file for case in CASES for file in case.files() if (ROOT / file).exists()})
    env = {**os.environ, "FAULT_REPORT": str(report)}
    command = [sys.executable, "-m", "pytest", "tests/reliability", *files]
    # This file is the plugin (`python -m` puts the checkout first on the path; bench/ is a
    # namespace package, and must not be on the path itself: bench/inspect.py would shadow inspect).
    # A case file that does not import yet shows as errored in its row; the others still run.
    command += ["-q", "-p", "no:cacheprovider", "-p", "bench.faults", "--continue-on-collection-errors", *extra]
    return subprocess.run(command, cwd=ROOT, env=env, check=False).returncode


def load(report: Path) -> list[dict]:
    if not report.exists():
        return []
    return [json.loads(line) for line in report.read_text(encoding="utf-8").splitlines() if line.strip()]


def table(headers: list[str], rows: list[list], total: list | None = None) -> str:
    body = [[str(cell) for cell in row] for row in rows + ([total] if total else [])]
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(headers)]
    line = "  ".join("-" * w for w in widths)

    def fmt(row):
        return "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )

    out = [fmt(headers), line] + [fmt(r) for r in body[: len(rows)]]
    if total:
        out += [line, fmt(body[-1])]
    return "\n".join(out)


def _grouped(entries: list[dict], key: str, passed: str, harmed: str, *, total: str) -> tuple[list[list], list]:
    """One row per `key` value (tried, how many `passed`, sum of `harmed`) and a total row."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for entry in entries:
        groups[entry[key]].append(entry)

    def row(name: str, items: list[dict]) -> list:
        return [name, len(items), sum(e[passed] for e in items), sum(e[harmed] for e in items)]

    return [row(name, items) for name, items in sorted(groups.items())], row(total, entries)


def test_outcomes(outcomes: list[dict]) -> dict[str, dict]:
    """Per test: its final outcome (failed beats skipped beats passed) and whether it timed out."""
    tests: dict[str, dict] = {}
    rank = {"passed": 0, "skipped": 1, "failed": 2}
    for entry in outcomes:
        test = tests.setdefault(entry["test"], {"outcome": "passed", "timeout": False})
        if rank[entry["outcome"]] > rank[test["outcome"]]:
            test["outcome"] = entry["outcome"]
        test["timeout"] = test["timeout"] or entry["timeout"]
    return tests


HARMS = ("lost_bytes", "held_deleted", "panel_touched", "ran_twice")


def case_rows(entries: list[dict]) -> tuple[list[list], bool]:
    tests = test_outcomes([e for e in entries if e["type"] == "outcome"])
    rows, ok = [], True
    for case in CASES:
        mine = {nodeid: t for nodeid, t in tests.items() if case.matches(nodeid)}
        records = [e for e in entries if e["type"] in {"fault", "bad_input"} and case.matches(e["test"])]
        harms = [e for e in entries if e["type"] == "harm" and case.matches(e["test"])]
        broken = [e for e in entries if e["type"] == "collect_error" and case.matches_file(e["path"])]
        passed = sum(t["outcome"] == "passed" for t in mine.values())
        hangs = sum(t["timeout"] for t in mine.values())
        errored = sum(t["outcome"] == "failed" and not t["timeout"] for t in mine.values())
        errored += sum(not e.get("rejected", True) or not e.get("survived", True) for e in records) + len(broken)
        # A test that records both a fault point and a harm measured the same bytes once: its harm counts.
        measured = {e["test"] for e in harms}
        lost = sum(e["lost_bytes"] for e in harms)
        lost += sum(e.get("lost_bytes", 0) for e in records if e["test"] not in measured)
        held, panel, twice = (sum(e[key] for e in harms) for key in HARMS[1:])
        touched = sum(e.get("touched_outside", 0) for e in records)
        recorded = len(harms) if case.harms or harms else "-"
        rows.append([case.label, len(mine) or "no test yet", passed, hangs, errored, recorded])
        rows[-1] += [lost, held, panel, twice, touched]
        # An issue-#21 row whose tests ran but measured nothing proves nothing.
        unmeasured = case.harms and bool(mine) and not harms
        ok = ok and bool(mine) and passed == len(mine) and not (hangs or errored or lost or touched)
        ok = ok and not (held or panel or twice or unmeasured)
    return rows, ok


def harm_rows(harms: list[dict]) -> tuple[list[list], list]:
    """One row per harm area: measurements recorded and the sum of each harm, and a total row."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for entry in harms:
        groups[entry["area"]].append(entry)

    def row(name: str, items: list[dict]) -> list:
        return [name, len(items), *(sum(e[key] for e in items) for key in HARMS)]

    return [row(name, items) for name, items in sorted(groups.items())], row("all harm measurements", harms)


def summarise(entries: list[dict]) -> tuple[str, bool, str]:
    """The tables, whether everything held, and the closing line of totals over the cases."""
    faults = [e for e in entries if e["type"] == "fault"]
    inputs = [e for e in entries if e["type"] == "bad_input"]
    harms = [e for e in entries if e["type"] == "harm"]
    ok = bool(faults) and bool(inputs)

    cases, cases_ok = case_rows(entries)
    fault_rows, fault_total = _grouped(faults, "area", "survived", "lost_bytes", total="all fault points")
    input_rows, input_total = _grouped(inputs, "surface", "rejected", "touched_outside", total="all bad inputs")
    harm_area_rows, harm_total = harm_rows(harms)
    ok = ok and cases_ok and fault_total[1] == fault_total[2] and fault_total[3] == 0
    ok = ok and input_total[1] == input_total[2] and input_total[3] == 0 and not any(harm_total[2:])

    lines = [
        table(
            ["case", "tests", "passed", "hangs", "errored (traceback)", "harm records", "bytes lost"]
            + ["held items deleted", "panel files touched", "run twice", "files touched outside roots"],
            cases,
        ),
        "",
        table(["fault area", "points tried", "survived", "bytes lost"], fault_rows, fault_total),
        "",
        table(
            ["bad input surface", "tried", "rejected cleanly", "files touched outside roots"], input_rows, input_total
        ),
        "",
        table(
            ["harm area", "measured", "bytes lost", "held items deleted", "panel files touched", "run twice"],
            harm_area_rows,
            harm_total,
        ),
    ]
    failures = [e for e in faults if not e["survived"] or e["lost_bytes"]] + [
        e for e in inputs if not e["rejected"] or e["touched_outside"]
    ]
    harmed = [e for e in harms if any(e[key] for key in HARMS)]
    unmeasured = [
        row[0] for case, row in zip(CASES, cases, strict=True) if case.harms and isinstance(row[1], int) and not row[5]
    ]
    tests = test_outcomes([e for e in entries if e["type"] == "outcome"])
    failed_tests = [f"{n}{' (timeout)' if t['timeout'] else ''}" for n, t in tests.items() if t["outcome"] == "failed"]
    if failed_tests:
        lines += ["", "Tests that failed:"] + [f"  {name}" for name in failed_tests[:30]]
    if failures:
        lines += ["", "Not survived / not rejected cleanly:"]
        lines += [f"  {e.get('point') or e.get('value')!r} ({e['test']})" for e in failures[:30]]
    if harmed:
        lines += ["", "Harm measured:"]
        lines += [
            f"  {e['point']!r}: " + ", ".join(f"{key} {e[key]}" for key in HARMS if e[key]) + f" ({e['test']})"
            for e in harmed[:30]
        ]
    if unmeasured:
        lines += ["", "Issue #21 cases whose tests ran but recorded no harm measurement:"]
        lines += [f"  {label}" for label in unmeasured]
    lost, held, panel, twice = (sum(row[i] for row in cases) for i in (6, 7, 8, 9))
    closing = (
        f"faults: {len(cases)} cases, {lost} bytes lost, {held} held items deleted, {panel} panel files touched"
        + (f", {twice} operations run twice" if twice else "")
    )
    return "\n".join(lines), ok, closing


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "faults.jsonl"
        returncode = run_tests(report, args.pytest_args)
        entries = load(report)
    text, ok, closing = summarise(entries)
    print()
    print(text)
    verdict = "PASS" if ok and returncode == 0 else "FAIL"
    print(
        f"\n{verdict}: pytest exit {returncode}; every case needs passing tests, and hangs, errors, "
        "data lost, held items deleted, panel files touched, work run twice and files touched outside roots must "
        "all be 0, and every issue #21 case must have measured its harms"
    )
    print(closing)
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
