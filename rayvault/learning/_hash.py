"""SHA-256 and SHA-1 hex digests without ``hashlib``'s OpenSSL module.

``import hashlib`` loads ``_hashlib`` (OpenSSL): ~3 ms of a cold ``rayvault-learn gate``, which
hashes a few small files (its policies file, a SOUL file). CPython's own implementations
(``_sha2``/``_sha256`` and ``_sha1``) give the same digests; ``hashlib`` is the fallback where
an interpreter lacks them.
"""

from __future__ import annotations

from collections.abc import Callable

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (a cold gate)
if TYPE_CHECKING:
    from typing import Any


def _builtin(names: tuple[str, ...], attribute: str) -> Callable[[bytes], Any]:
    for name in names:
        try:
            module = __import__(name)
        except ImportError:
            continue
        found = getattr(module, attribute, None)
        if found is not None:
            return found  # type: ignore[no-any-return]
    import hashlib

    return getattr(hashlib, attribute)  # type: ignore[no-any-return]


_sha256 = _builtin(("_sha2", "_sha256"), "sha256")
_sha1 = _builtin(("_sha1",), "sha1")


def sha256_hex(data: bytes) -> str:
    """The SHA-256 of ``data``, in hex (``hashlib.sha256(data).hexdigest()``)."""
    return str(_sha256(data).hexdigest())


def sha1_hex(data: bytes) -> str:
    """The SHA-1 of ``data``, in hex (``hashlib.sha1(data).hexdigest()``)."""
    return str(_sha1(data).hexdigest())
