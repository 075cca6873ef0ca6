"""Report: faults injected and hostile inputs tried, and what survived them.

    .venv/bin/python bench/faults.py                 # the reliability tests, then the table
    .venv/bin/python bench/faults.py -- -k sigkill   # pass pytest options after --

Runs `pytest tests/reliability` (real dockerd, moto's S3 server, killed worker processes)
with `FAULT_REPORT` pointing at a temporary file; every case records what it tried there
(see tests/reliability/conftest.py), and this script prints:

- fault points tried, survived (invariants held and the retry finished), bytes lost;
- bad inputs tried, rejected cleanly (a clear message, no traceback), files touched
  outside the storage roots.

Exits non-zero when a test failed, when any byte was lost or any file outside a root was
touched, or when nothing was recorded at all (a report of zero cases proves nothing).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_tests(report: Path, extra: list[str]) -> int:
    env = {**os.environ, "FAULT_REPORT": str(report)}
    command = [sys.executable, "-m", "pytest", "tests/reliability", "-q", "-p", "no:cacheprovider", *extra]
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


def summarise(entries: list[dict]) -> tuple[str, bool]:
    faults = [e for e in entries if e["type"] == "fault"]
    inputs = [e for e in entries if e["type"] == "bad_input"]
    ok = bool(faults) and bool(inputs)

    fault_rows, fault_total = _grouped(faults, "area", "survived", "lost_bytes", total="all fault points")
    input_rows, input_total = _grouped(inputs, "surface", "rejected", "touched_outside", total="all bad inputs")
    ok = ok and fault_total[1] == fault_total[2] and fault_total[3] == 0
    ok = ok and input_total[1] == input_total[2] and input_total[3] == 0

    lines = [
        table(["fault area", "points tried", "survived", "bytes lost"], fault_rows, fault_total),
        "",
        table(
            ["bad input surface", "tried", "rejected cleanly", "files touched outside roots"], input_rows, input_total
        ),
    ]
    failures = [e for e in faults if not e["survived"] or e["lost_bytes"]] + [
        e for e in inputs if not e["rejected"] or e["touched_outside"]
    ]
    if failures:
        lines += ["", "Not survived / not rejected cleanly:"]
        lines += [f"  {e.get('point') or e.get('value')!r} ({e['test']})" for e in failures[:30]]
    return "\n".join(lines), ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "faults.jsonl"
        returncode = run_tests(report, args.pytest_args)
        entries = load(report)
    text, ok = summarise(entries)
    print()
    print(text)
    verdict = "PASS" if ok and returncode == 0 else "FAIL"
    print(f"\n{verdict}: pytest exit {returncode}; data lost and files touched outside roots must both be 0")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
