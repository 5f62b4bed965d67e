"""Outside programs the tests drive (swaks, dnsmasq, Postfix): found, or the
test is skipped with how to install it, except in CI (CI=true), where a
missing program fails the test instead: CI must not pass by skipping."""

from __future__ import annotations

import os
import shutil

import pytest

SBIN = "/usr/sbin:/sbin:/usr/local/sbin"


def missing(reason: str) -> None:
    """Fails in CI, skips elsewhere; never returns."""
    if os.environ.get("CI") == "true":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def require_program(name: str, install: str) -> str:
    path = shutil.which(name) or shutil.which(name, path=SBIN)
    if path is None:
        missing(f"{name} is missing: {install}")
    assert path is not None
    return path
