"""The suite's root: shared code lives in `tests/helpers/` (on the path through pyproject's `pythonpath`).

Tests marked `model` need real models: they fail (never skip) when CI=true and one is missing
(`helpers.real.require`).
"""

from __future__ import annotations

import pytest

# The helpers hold assertions shared by several test files; rewrite them so a failure shows its values.
pytest.register_assert_rewrite("helpers")

# Session fixtures that test files in several folders use.
pytest_plugins = ["helpers.wake"]
