"""Test configuration shared by the whole suite.

XLA:CPU flags must be set before jax is imported: MJX is 50-400x slower with the default
CPU fusion emitters (decoupled_jax/runtime.py); the flag does not slow ordinary training.

Helpers shared by several test files (paths, running binaries, synthetic datasets, the
random policy, serving frames) live in tests/helpers.py: `from helpers import ...`.
"""

from decoupled_jax.runtime import configure_environment  # noqa: E402

configure_environment()

import pytest  # noqa: E402

from helpers import REPO_PATH  # noqa: E402

GOLDEN_DIR = REPO_PATH / "tests" / "data" / "golden"   # diffusers outputs (regenerate.py)


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: end-to-end runs excluded from the default suite")
  config.addinivalue_line("markers", "sim: needs robosuite (the `sim` extra); skipped without it")


@pytest.fixture(scope="session")
def golden_dir():
  return GOLDEN_DIR
