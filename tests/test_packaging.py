"""The package's metadata: one version source."""

from __future__ import annotations

import importlib.metadata

import pytest

import rayvault


def test_the_installed_version_is_the_package_version() -> None:
    """pyproject.toml declares the version dynamic, read from ``rayvault.__version__``."""
    assert importlib.metadata.version("rayvault-learning") == rayvault.__version__


@pytest.mark.slow
def test_api_functions_named_like_their_module_stay_functions() -> None:
    """``revisit`` and ``regroup`` are API functions and submodules: importing a submodule
    first must not turn ``from rayvault.learning import revisit`` into the module (a fresh
    interpreter, so the import order is the one under test)."""
    import subprocess
    import sys

    code = (
        "import rayvault.learning.revisit, rayvault.learning.regroup\n"
        "import inspect\n"
        "from rayvault.learning import regroup, revisit\n"
        "import rayvault.learning as api\n"
        "assert inspect.isfunction(revisit) and inspect.isfunction(regroup), (revisit, regroup)\n"
        "assert api.revisit is revisit and api.regroup is regroup\n"
        "from rayvault.learning.revisit import conflicting_rules\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_exports_all_and_type_checking_imports_agree() -> None:
    """``__all__``, the lazy exports and the imports type checkers read name the same things,
    each from the same module, and every name resolves."""
    import ast
    import importlib
    from pathlib import Path

    import rayvault.learning as api

    tree = ast.parse(Path(api.__file__).read_text(encoding="utf-8"))
    [block] = [n for n in tree.body if isinstance(n, ast.If)]  # if TYPE_CHECKING:
    typed = {
        alias.asname or alias.name: str(node.module).removeprefix("rayvault.learning.")
        for node in block.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    exports = api._EXPORTS
    assert typed == exports
    assert sorted(api.__all__) == sorted(exports)
    for name, module in exports.items():
        value = getattr(api, name)
        assert value is getattr(importlib.import_module(f"rayvault.learning.{module}"), name)
    # The error log and the gate, promised importable from the package.
    for name in ("log_error", "resolve_error", "get_unresolved", "get_lessons"):
        assert name in api.__all__
    for name in ("promote_to_learning", "learning_gate", "acknowledge"):
        assert name in api.__all__
