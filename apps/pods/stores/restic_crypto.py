"""restic 0.14's key files, opened and written the way restic does (its design document, "Keys,
Encryption and MAC"): scrypt derives 64 bytes from a password and the key file's salt (an
AES-256 key, then Poly1305-AES's `k` and `r`), and a sealed text is nonce ‖ AES-256-CTR
ciphertext ‖ the Poly1305-AES tag of the ciphertext. A key file holds the repository's master
key (JSON) sealed that way, with the scrypt cost it was derived with (`N`, `r`, `p`)."""

import base64
import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.poly1305 import Poly1305

NONCE_BYTES = 16
SALT_BYTES = 64  # restic refuses any other length
# A key file asking for more memory than this is not opened here (restic's own calibration
# stays at 60 MiB): a crafted key file must not take the worker's memory.
MEMORY_LIMIT = 512 * 1024**2


@dataclass(frozen=True)
class Cost:
    """scrypt's parameters: the work per guess grows with n × r × p."""

    n: int
    r: int
    p: int

    @classmethod
    def of(cls, fields: dict) -> "Cost":
        return cls(int(fields["N"]), int(fields["r"]), int(fields["p"]))

    def fields(self) -> dict:
        return {"N": self.n, "r": self.r, "p": self.p}

    @property
    def work(self) -> int:
        return self.n * self.r * self.p

    @property
    def memory(self) -> int:
        return 128 * self.r * (self.n + self.p + 2)


@dataclass(frozen=True)
class Keys:
    encrypt: bytes  # AES-256
    mac_k: bytes  # Poly1305-AES: `s` is AES_k(nonce)
    mac_r: bytes


def scrypt(password: bytes, salt: bytes, cost: Cost, length: int) -> bytes:
    if cost.n < 2 or cost.n & (cost.n - 1) or cost.r < 1 or cost.p < 1 or cost.memory > MEMORY_LIMIT:
        raise ValueError(f"scrypt parameters out of range: {cost}")
    return hashlib.scrypt(password, salt=salt, n=cost.n, r=cost.r, p=cost.p, dklen=length, maxmem=cost.memory + 2**20)


def derive(password: bytes, salt: bytes, cost: Cost) -> Keys:
    derived = scrypt(password, salt, cost, 64)
    return Keys(derived[:32], derived[32:48], derived[48:64])


def _mask(r: bytes) -> bytes:
    """Poly1305's clamping of `r`, as restic applies it."""
    masked = bytearray(r)
    for i in (3, 7, 11, 15):
        masked[i] &= 15
    for i in (4, 8, 12):
        masked[i] &= 252
    return bytes(masked)


def _tag(keys: Keys, nonce: bytes, ciphertext: bytes) -> bytes:
    # One block, AES_k(nonce): how Poly1305-AES makes its `s` (not a cipher mode of its own).
    aes = Cipher(algorithms.AES(keys.mac_k), modes.ECB()).encryptor()  # noqa: S305
    s = aes.update(nonce) + aes.finalize()
    return Poly1305.generate_tag(_mask(keys.mac_r) + s, ciphertext)


def open_sealed(blob: bytes, keys: Keys) -> bytes:
    """The plain text of a sealed blob; ValueError when its tag does not match (another key)."""
    if len(blob) < 2 * NONCE_BYTES:
        raise ValueError("sealed text too short")
    nonce, ciphertext, tag = blob[:NONCE_BYTES], blob[NONCE_BYTES:-16], blob[-16:]
    if not hmac.compare_digest(_tag(keys, nonce, ciphertext), tag):
        raise ValueError("not sealed with this key")
    decryptor = Cipher(algorithms.AES(keys.encrypt), modes.CTR(nonce)).decryptor()
    return decryptor.update(ciphertext) + decryptor.finalize()


def seal(plain: bytes, keys: Keys) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    encryptor = Cipher(algorithms.AES(keys.encrypt), modes.CTR(nonce)).encryptor()
    ciphertext = encryptor.update(plain) + encryptor.finalize()
    return nonce + ciphertext + _tag(keys, nonce, ciphertext)


def master_keys(master: bytes) -> Keys:
    """The repository's own keys out of the master key's JSON (what `restic cat masterkey` prints)."""
    found = json.loads(master)
    return Keys(
        base64.b64decode(found["encrypt"]), base64.b64decode(found["mac"]["k"]), base64.b64decode(found["mac"]["r"])
    )


def key_file_open(key_file: dict, password: bytes) -> bytes:
    """The master key's JSON sealed in a key file; ValueError when `password` does not open it."""
    if key_file.get("kdf") != "scrypt":
        raise ValueError("only scrypt key files are opened")
    keys = derive(password, base64.b64decode(key_file["salt"]), Cost.of(key_file))
    master = open_sealed(base64.b64decode(key_file["data"]), keys)
    master_keys(master)  # a master key, not any text
    return master


def key_file_make(master: bytes, password: bytes, cost: Cost, *, salt: bytes, **fields) -> bytes:
    """A key file's bytes, as restic writes them (its name in `keys/` is their sha256)."""
    keys = derive(password, salt, cost)
    body = {
        "created": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        **fields,
        "kdf": "scrypt",
        **cost.fields(),
        "salt": base64.b64encode(salt).decode(),
        "data": base64.b64encode(seal(master, keys)).decode(),
    }
    return json.dumps(body).encode()
