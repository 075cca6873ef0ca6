"""How numbers read for people. Low in the layers so services, selectors, the CLI and
templates all format bytes the same way (the exact value stays in the database and --json)."""

_UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]


def humanize_bytes(value) -> str:
    """`1536` → "1.5 KiB"; None or "" → "—" (not measured)."""
    if value is None or value == "":
        return "—"
    size = float(value)
    for unit in _UNITS:
        if abs(size) < 1024 or unit == _UNITS[-1]:
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} PiB"  # unreachable; keeps type checkers calm


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """`plural(1, "file")` → "1 file"; `plural(3, "file")` → "3 files"."""
    word = singular if count == 1 else (plural_form or f"{singular}s")
    return f"{count:,} {word}"


def join_words(words, *, last: str = "and") -> str:
    """`["stop", "start", "delete"]` → "stop, start and delete"; one word stays itself."""
    words = [str(word) for word in words]
    if len(words) < 2:
        return "".join(words)
    return f"{', '.join(words[:-1])} {last} {words[-1]}"


def first_line(exc: BaseException | str, *, default: str = "") -> str:
    """The first non-empty line of an error's text, or its type's name: never an IndexError
    on an empty message."""
    text = str(exc).strip()
    if text:
        return text.splitlines()[0]
    if isinstance(exc, BaseException):
        return default or type(exc).__name__
    return default


def humanize_duration(seconds: float) -> str:
    """A length of time in its two largest units: `11100` → "3 h 5 min", `176400` → "2 d 1 h";
    under a minute → "under a minute"."""
    seconds = max(0, int(seconds))
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            parts.append(f"{seconds // size} {unit}")
            seconds %= size
        if len(parts) == 2:
            break
    return " ".join(parts) if parts else "under a minute"
