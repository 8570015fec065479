"""Test configuration shared by the whole suite.

XLA:CPU flags must be set before jax is imported: MJX is 50-400x slower with the default
CPU fusion emitters (../shared/notes/platform.md); the flag does not slow ordinary training.
"""
import os

from decoupled_jax.runtime import configure_environment  # noqa: E402

configure_environment()

import pathlib  # noqa: E402

import pytest  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: end-to-end runs excluded from the default suite")
  config.addinivalue_line("markers", "sim: needs robosuite (the `sim` extra); skipped without it")


@pytest.fixture(scope="session")
def golden_dir():
  d = SHARED_DIR / "data" / "golden"
  if not d.exists():
    if os.environ.get("CI"):  # CI always has shared/ beside the clone: never skip parity there
      pytest.fail(f"golden data not found at {d}")
    pytest.skip(f"golden data not found at {d} (shared/ must sit beside the repository)")
  return d
