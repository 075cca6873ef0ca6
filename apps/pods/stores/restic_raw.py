"""What a restic repository shows without its key: the names of its files (restic names each
lock, key and snapshot file by its id) and the bytes of its config and key files; and the one
thing written here, not by restic: the panel's working key file (`restic_working`).

Every restic process derives the key from SNAPSHOT_KEY_FILE first (scrypt, calibrated by
`restic init` to about half a second on the machine that made the repository). A preflight
that only asks "does the key open it, and does any lock hold it?" reads these names instead:

- the key is right when the key file (its inode, size, mtime and ctime: any write changes the
  ctime, though only to the kernel's clock tick, so a rewrite to the same size within a few
  milliseconds of the last would pass), the repository's config and its key files are the
  very ones a restic of ours last opened it with (recorded in VAR_DIR/restic-opened/, no
  secret in it);
- nothing holds the repository when its `locks/` folder is empty;
- a snapshot is there when a file in `snapshots/` bears its id.

Anything else (never opened from here, a new or removed key, a rewritten key file, a lock, a
listing that fails) is left to restic, as before. The copy itself always goes through restic,
which checks the key and every chunk again: a wrong answer here can only move a refusal from
before the pod is touched to the step that would have refused anyway, nothing is lost.
"""

import hashlib
import json
import os
from pathlib import Path

from django.conf import settings

from controlpanel.s3 import s3_client


def names(store, folder: str) -> list[str]:
    """The file names in one of the repository's folders (`locks`, `keys`, `snapshots`)."""
    if store.path is not None:
        try:
            return sorted(os.listdir(store.path / folder))
        except FileNotFoundError:
            return []
    prefix = _s3_key(store, f"{folder}/")
    found = []
    for page in s3_client().get_paginator("list_objects_v2").paginate(Bucket=store.bucket, Prefix=prefix):
        found += [item["Key"][len(prefix) :] for item in page.get("Contents") or []]
    return sorted(found)


def file_bytes(store, name: str, *, most: int | None = None) -> bytes | None:
    """One file of the repository (`config`, `keys/<id>`) as stored; None when it is not there,
    or holds more than `most` bytes."""
    if store.path is not None:
        try:
            with open(store.path / name, "rb") as found:
                body = found.read() if most is None else found.read(most + 1)
        except FileNotFoundError:
            return None
    else:
        client = s3_client()
        asked = {} if most is None else {"Range": f"bytes=0-{most}"}
        try:
            body = client.get_object(Bucket=store.bucket, Key=_s3_key(store, name), **asked)["Body"].read()
        except client.exceptions.NoSuchKey:
            return None
    return None if most is not None and len(body) > most else body


def key_put(store, key_id: str, body: bytes) -> None:
    """A key file into `keys/`, whole or not at all (a local file appears only once written
    and synced, read-only as restic leaves its own)."""
    if store.path is None:
        s3_client().put_object(Bucket=store.bucket, Key=_s3_key(store, f"keys/{key_id}"), Body=body)
        return
    partial = store.path / f".key-{key_id}.{os.getpid()}"  # outside keys/: restic never lists it
    try:
        with open(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
            out.write(body)
            out.flush()
            os.fsync(out.fileno())
        partial.chmod(0o400)
        partial.replace(store.path / "keys" / key_id)
    finally:
        partial.unlink(missing_ok=True)


def key_delete(store, key_id: str) -> None:
    """A key file this panel wrote and no restic ever opened (`restic_working`)."""
    if store.path is None:
        s3_client().delete_object(Bucket=store.bucket, Key=_s3_key(store, f"keys/{key_id}"))
    else:
        (store.path / "keys" / key_id).unlink(missing_ok=True)


def _s3_key(store, name: str) -> str:
    return f"{store.prefix}/{name}" if store.prefix else name


def key_file_stamp() -> list:
    """What changes whenever SNAPSHOT_KEY_FILE is written: its inode, size, mtime and ctime."""
    key = os.stat(settings.SNAPSHOT_KEY_FILE)
    return [settings.SNAPSHOT_KEY_FILE, key.st_ino, key.st_size, key.st_mtime_ns, key.st_ctime_ns]


def _stamp(store) -> dict | None:
    """What the key's check depends on, now; None when the repository has no config yet."""
    config = file_bytes(store, "config")
    if config is None:
        return None
    return {
        "repository": store.repository,
        "key_file": key_file_stamp(),
        "keys": names(store, "keys"),
        "config": hashlib.sha256(config).hexdigest(),
    }


def _record_path(store) -> Path:
    return Path(settings.VAR_DIR) / "restic-opened" / hashlib.sha256(store.repository.encode()).hexdigest()[:32]


def opened_record(store, taken: dict | None) -> None:
    """restic opened the repository with the key as it was when `taken` was made."""
    if taken is None:
        return
    path = _record_path(store)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}")
        partial.write_text(json.dumps(taken))
        partial.replace(path)
    except OSError:
        pass  # only a shortcut lost: the next preflight asks restic again


def taken_now(store) -> dict | None:
    """`_stamp(store)`, or None when the repository cannot be listed without restic now."""
    try:
        return _stamp(store)
    except Exception:  # whatever failed, restic will say it in its own words
        return None


def lock_ids_if_opened(store) -> list[str] | None:
    """The ids of the repository's lock files when restic opened it with this very key
    before (no restic started); None when only restic can tell."""
    now = taken_now(store)
    try:
        if now is None or json.loads(_record_path(store).read_text()) != now:
            return None
        return names(store, "locks")
    except Exception:  # no record, or a listing that fails now: restic will say why
        return None


def snapshot_present(store, restic_id: str) -> bool:
    """Whether a snapshot file with this (short or full) id is in the repository; False when
    the listing fails (restic is asked then)."""
    try:
        return any(name.startswith(restic_id) for name in names(store, "snapshots"))
    except Exception:  # a listing that fails now: restic will say why
        return False
