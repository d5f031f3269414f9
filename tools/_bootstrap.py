"""Make ``rayvault`` importable when a tools script runs from a checkout that is not installed."""

import sys
from pathlib import Path

try:
    import rayvault  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
