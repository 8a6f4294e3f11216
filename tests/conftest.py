"""Test setup: 4 fake CPU devices, set before JAX is imported anywhere."""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def pytest_collection_modifyitems(config, items):
    """Peer tests skip (with a reason) where the PyTorch peers are not installed.

    CI installs them (.ci/run), so there they always run.
    """
    if _has("torch"):
        return
    skip = pytest.mark.skip(
        reason="PyTorch peers not installed (pip install torch==2.13.0 .[peers])"
    )
    for item in items:
        if "peers" in item.keywords:
            item.add_marker(skip)
