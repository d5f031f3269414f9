"""The package's metadata: one version source."""

from __future__ import annotations

import importlib.metadata

import rayvault


def test_the_installed_version_is_the_package_version() -> None:
    """pyproject.toml declares the version dynamic, read from ``rayvault.__version__``."""
    assert importlib.metadata.version("rayvault-learning") == rayvault.__version__
