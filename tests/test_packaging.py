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
