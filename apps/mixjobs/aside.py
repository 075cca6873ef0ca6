"""Deleting a file that a writer without the lock may be replacing at the same moment.

The mixing service rewrites a job by writing a temporary file and renaming it over the job
(atomic rename). A writer that skips the session lock can rename a fresh job in between
the panel's last read and its unlink, and an unlink by name would delete that fresh job.
So the panel never unlinks a name it has judged: it renames the file to a name no writer
uses (`.<name>.panel-cleanup-<random>`; an index goes to its session's jobs folder as
`.<job>.json.index.panel-cleanup-<random>`), proves the file now under that name is the
very file it judged (same device and inode, and for files it read, the same sha256), and
only then unlinks it. Anything else goes back under its name, unless the writer has already
put a newer file there (then the newer one stays: it would have replaced the other anyway).

A cleanup killed while files are set aside leaves them in the session's jobs folder;
`restore_set_aside` finishes that at the start of the next cleanup of the session: a job
goes back under its name (the run judges it again), an index goes back only if its job is
there, and an index whose job is gone is removed (it was set aside to go with its job).
"""

import errno
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from apps.mixjobs.files import INDEX_FOLDER, Unreadable, media_root, read_regular_file

ASIDE_MARK = ".panel-cleanup-"
INDEX_SUFFIX = ".index"


@dataclass(frozen=True)
class SetAside:
    """A file moved to `aside`, proven to be the one judged: `unlink()` removes it for good,
    `put_back()` undoes the move. In a dry run nothing moves: `aside` is None."""

    path: Path
    aside: Path | None
    size: int

    def unlink(self) -> None:
        if self.aside is not None:
            os.unlink(self.aside)

    def put_back(self) -> str:
        return put_back(self.aside, self.path) if self.aside is not None else "left in place"


def aside_path(path: Path, *, folder: Path | None = None, suffix: str = "") -> Path:
    return (folder or path.parent) / f".{path.name}{suffix}{ASIDE_MARK}{secrets.token_hex(6)}"


def index_aside_path(index: Path, jobs_folder: Path) -> Path:
    """An index is set aside in its job's session folder, where the next run looks."""
    return aside_path(index, folder=jobs_folder, suffix=INDEX_SUFFIX)


def set_aside(
    path: Path, *, ident: tuple[int, int], fingerprint: str | None, limit: int, aside: Path | None = None
) -> SetAside | str:
    """Move `path` aside and prove it is the file judged (`ident`, and `fingerprint` when the
    file was read); returns the set-aside file, or why not (then the file is back in place)."""
    aside = aside or aside_path(path)
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return "gone before it could be removed"
    except OSError as exc:
        if exc.errno != errno.EXDEV or aside.parent == path.parent:
            raise
        # The jobs folder is on another filesystem than jobs_index: set it aside in place.
        return set_aside(path, ident=ident, fingerprint=fingerprint, limit=limit)
    try:
        st = os.lstat(aside)
        same = stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) == ident and st.st_nlink == 1
        if same and fingerprint is not None:
            found = read_regular_file(aside, limit=limit)
            same = found.ident == ident and found.fingerprint == fingerprint
    except (OSError, Unreadable):
        same = False
    if same:
        return SetAside(path=path, aside=aside, size=st.st_size)
    return f"rewritten while it was being removed; {put_back(aside, path)}"


def put_back(aside: Path, path: Path) -> str:
    """Give the file set aside its name back, never replacing a file now under that name."""
    try:
        # A hard link never replaces an existing name (rename would): a newer file stays.
        os.link(aside, path, follow_symlinks=False)
    except FileExistsError:
        os.unlink(aside)
        return "a newer file took its place and is kept"
    except OSError as exc:  # a folder cannot be hard-linked; a filesystem may refuse links
        if os.path.lexists(path):
            return f"left at {aside.name}: {exc.strerror}"
        os.rename(aside, path)
        return "put back"
    os.unlink(aside)
    return "put back"


def restore_set_aside(folder: Path) -> list[str]:
    """Finish what a killed cleanup left set aside in `folder` (jobs first, then indexes);
    returns one line per file: its name and what became of it."""
    try:
        if not stat.S_ISDIR(os.lstat(folder).st_mode):  # a symlinked folder is not followed
            return []
        names = sorted(entry.name for entry in os.scandir(folder) if _is_aside(entry))
    except OSError:  # no such folder (an output folder is optional), or unreadable
        return []
    done = []
    jobs = [name for name in names if not _original(name).endswith(INDEX_SUFFIX)]
    for name in jobs + [name for name in names if name not in jobs]:
        original = _original(name)
        if original.endswith(INDEX_SUFFIX):
            job_name = original[: -len(INDEX_SUFFIX)]
            path = media_root() / INDEX_FOLDER / job_name
            if not os.path.lexists(folder / job_name):
                os.unlink(folder / name)  # set aside to go with its job, which is gone
                done.append(f"{path}: removed, its job is gone")
                continue
        else:
            path = folder / original
        done.append(f"{path}: {put_back(folder / name, path)}")
    return done


def _is_aside(entry: os.DirEntry) -> bool:
    name = entry.name
    return (
        name.startswith(".") and ASIDE_MARK in name and bool(_original(name)) and entry.is_file(follow_symlinks=False)
    )


def _original(name: str) -> str:
    return name[1 : name.index(ASIDE_MARK)]
