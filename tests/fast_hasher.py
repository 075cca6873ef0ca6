"""Tests only: a password hash that derives in microseconds.

Django's PBKDF2 runs a million SHA-256 rounds (about half a second of CPU) for every password
set and every login: each `staff_user` and `viewer_user`, each browser log-in, each failed one.
This is the same algorithm (`pbkdf2_sha256`) with its iteration count in every hash as usual, so
a panel started in a subprocess on the real settings still checks these hashes (and would
upgrade them on a log-in). Which hasher the panel uses is its settings' business, not a test's:
no test asserts on the count. Set for the test process in tests/conftest.py."""

from django.contrib.auth.hashers import PBKDF2PasswordHasher


class FastPBKDF2PasswordHasher(PBKDF2PasswordHasher):
    iterations = 1_000
