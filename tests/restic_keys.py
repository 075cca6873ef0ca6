"""Tests only: give a restic repository a key that derives in microseconds.

`restic init` calibrates scrypt to about half a second of CPU, and every restic process pays it
again when it opens the repository: hundreds of processes per suite run. The same master key,
wrapped again under scrypt N=1024 (restic's own tests use weaker), opens the repository the same
way; restic reads the parameters from the key file. Never used outside tests."""

import base64
import hashlib
import json
import os
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.poly1305 import Poly1305

FAST = {"N": 1024, "r": 8, "p": 1}


def _mask(r: bytes) -> bytes:
    # restic clamps the Poly1305 `r` as the algorithm requires (poly1305-AES, Bernstein)
    masked = bytearray(r)
    for i in (3, 7, 11, 15):
        masked[i] &= 15
    for i in (4, 8, 12):
        masked[i] &= 252
    return bytes(masked)


def _keys(password: bytes, salt: bytes, params: dict) -> tuple[bytes, bytes, bytes]:
    derived = hashlib.scrypt(
        password, salt=salt, n=params["N"], r=params["r"], p=params["p"], dklen=64, maxmem=256 * 1024**2
    )
    return derived[:32], derived[32:48], derived[48:64]  # AES-256 key, MAC k (AES), MAC r


def _mac(k: bytes, r: bytes, nonce: bytes, ciphertext: bytes) -> bytes:
    # One block, AES_k(nonce): poly1305-AES derives its `s` this way (not a cipher mode use).
    aes = Cipher(algorithms.AES(k), modes.ECB()).encryptor()  # noqa: S305
    s = aes.update(nonce) + aes.finalize()
    return Poly1305.generate_tag(_mask(r) + s, ciphertext)


def _open(blob: bytes, keys: tuple[bytes, bytes, bytes]) -> bytes:
    nonce, ciphertext, tag = blob[:16], blob[16:-16], blob[-16:]
    if _mac(keys[1], keys[2], nonce, ciphertext) != tag:
        raise ValueError("wrong password for this restic key")
    decryptor = Cipher(algorithms.AES(keys[0]), modes.CTR(nonce)).decryptor()
    return decryptor.update(ciphertext) + decryptor.finalize()


def _seal(plain: bytes, keys: tuple[bytes, bytes, bytes]) -> bytes:
    nonce = os.urandom(16)
    encryptor = Cipher(algorithms.AES(keys[0]), modes.CTR(nonce)).encryptor()
    ciphertext = encryptor.update(plain) + encryptor.finalize()
    return nonce + ciphertext + _mac(keys[1], keys[2], nonce, ciphertext)


def restic_key_make_fast(repository: Path, password: str) -> None:
    """Replace the repository's only key by one with the same master key and fast parameters."""
    (old,) = list((repository / "keys").iterdir())
    key = json.loads(old.read_bytes())
    master = _open(base64.b64decode(key["data"]), _keys(password.encode(), base64.b64decode(key["salt"]), key))
    salt = os.urandom(64)
    key.update(FAST, salt=base64.b64encode(salt).decode())
    key["data"] = base64.b64encode(_seal(master, _keys(password.encode(), salt, FAST))).decode()
    body = json.dumps(key).encode()
    new = repository / "keys" / hashlib.sha256(body).hexdigest()
    new.write_bytes(body)
    new.chmod(old.stat().st_mode)
    old.unlink()


def restic_key_make_fast_on_s3(client, bucket: str, prefix: str, password: str, scratch: Path) -> None:
    """`restic_key_make_fast` for a repository on S3 under `prefix`: its key object is rewrapped
    in `scratch` (an empty folder) and put back in the old one's place."""
    (old,) = [obj["Key"] for obj in client.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/keys/")["Contents"]]
    (scratch / "keys").mkdir(parents=True)
    client.download_file(bucket, old, str(scratch / "keys" / old.rsplit("/", 1)[-1]))
    restic_key_make_fast(scratch, password)
    (new,) = list((scratch / "keys").iterdir())
    client.upload_file(str(new), bucket, f"{prefix}/keys/{new.name}")
    client.delete_object(Bucket=bucket, Key=old)


def restic_lock_write(repository: Path, password: str, *, pid: int, hostname: str, exclusive: bool = True) -> str:
    """Write a lock into a repository as restic 0.14 would (its JSON sealed with the master key,
    named by the sha256 of what is stored), for a restic that is gone: what a prune killed with
    SIGKILL leaves behind. Returns the lock's id."""
    (key_file,) = list((repository / "keys").iterdir())
    key = json.loads(key_file.read_bytes())
    wrapped = _open(base64.b64decode(key["data"]), _keys(password.encode(), base64.b64decode(key["salt"]), key))
    master = json.loads(wrapped)
    keys = (
        base64.b64decode(master["encrypt"]),
        base64.b64decode(master["mac"]["k"]),
        base64.b64decode(master["mac"]["r"]),
    )
    lock = {
        "time": "2026-01-01T00:00:00.000000000Z",
        "exclusive": exclusive,
        "hostname": hostname,
        "username": "root",
        "pid": pid,
        "uid": 0,
        "gid": 0,
    }
    sealed = _seal(json.dumps(lock).encode(), keys)
    lock_id = hashlib.sha256(sealed).hexdigest()
    (repository / "locks").mkdir(exist_ok=True)
    (repository / "locks" / lock_id).write_bytes(sealed)
    return lock_id
