"""Failed-login counting in the shared cache, per username and per client address."""

import hashlib

from django.conf import settings
from django.core.cache import cache


def _key(kind: str, value: str) -> str:
    # Hashed so usernames never appear in cache keys or files.
    return f"login-fail:{kind}:{hashlib.sha256(value.encode()).hexdigest()}"


def login_keys(*, username: str, address: str) -> list[str]:
    return [_key("user", username.lower()), _key("addr", address)]


def login_blocked(*, username: str, address: str) -> bool:
    return any(
        (cache.get(key) or 0) >= settings.LOGIN_RATE_LIMIT for key in login_keys(username=username, address=address)
    )


def login_failed(*, username: str, address: str) -> None:
    for key in login_keys(username=username, address=address):
        cache.add(key, 0, timeout=settings.LOGIN_RATE_WINDOW_SECONDS)
        try:
            cache.incr(key)
        except ValueError:
            cache.set(key, 1, timeout=settings.LOGIN_RATE_WINDOW_SECONDS)


def login_succeeded(*, username: str, address: str) -> None:
    cache.delete(_key("user", username.lower()))
