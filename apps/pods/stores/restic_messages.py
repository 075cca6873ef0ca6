"""restic's output told for people: sizes as it prints them, and the one line that says what
went wrong out of what it writes to stderr; and what its stderr says to do next."""

import re

WRONG_KEY = "wrong password or no key found"
UNREACHABLE = ("connection refused", "no such host", "dial tcp")
UNITS = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "TiB": 1024**4}


def size_of(text: str) -> int:
    """restic's `4.769 MiB` → bytes."""
    number, _, unit = text.strip().partition(" ")
    return int(float(number) * UNITS.get(unit.strip(), 1))


def first_skipped(stderr: str) -> str | None:
    """restic goes on past a file it cannot back up, restore or read back, and ends with
    "Fatal: There were N errors": the first file's own error says what happened."""
    skipped = [line.strip() for line in stderr.splitlines() if line.startswith("ignoring error for ")]
    if not skipped:
        return None
    more = f" (and {len(skipped) - 1} more)" if len(skipped) > 1 else ""
    return skipped[0].removeprefix("ignoring error for ") + more


def go_error(stderr: str) -> str | None:
    """restic's message out of the Go stack trace it prints for some errors (no "Fatal" line):
    the messages are the lines that are not stack frames (a function, then a tab-indented
    file:line), innermost first; told outermost first, as one line."""
    lines = [line for line in stderr.splitlines() if line.strip() and "retrying after" not in line]
    if not any(line.startswith("\t") and re.search(r"\.(go|s):\d+$", line) for line in lines):
        return None
    messages = [
        line.strip()
        for at, line in enumerate(lines)
        if not line.startswith("\t") and not (at + 1 < len(lines) and lines[at + 1].startswith("\t"))
    ]
    return ": ".join(reversed(messages)) or None


def refused_working(env: dict, stderr: str) -> bool:
    """restic, given the working key, found no key it opens: the key was removed meanwhile."""
    return "RESTIC_KEY_HINT" in env and WRONG_KEY in stderr


def raced(stderr: str) -> bool:
    """A read without the lock failed in a way a prune or forget beside it can explain (a file
    it listed gone): worth reading again under the lock. Not a refused key, a store that does
    not answer, or a snapshot that is not there, which a lock does not change."""
    text = stderr.lower()
    return not any(word in text for word in (WRONG_KEY, *UNREACHABLE, "no snapshot found", "no matching id"))
