"""The raw error log (spec path ``tools.lib.error_log``). Re-exports
:mod:`rayvault.learning.errors`."""

from rayvault.learning.errors import (
    get_error,
    get_lessons,
    get_patterns,
    get_unresolved,
    list_errors,
    log_error,
    promote_to_learning,
    resolve_error,
)

__all__ = [
    "get_error",
    "get_lessons",
    "get_patterns",
    "get_unresolved",
    "list_errors",
    "log_error",
    "promote_to_learning",
    "resolve_error",
]
