"""The deployment recipes' tests need Debian's nginx, supervisor and systemd (systemd-analyze), and openssl, which
`make test-deps` installs. Without one, a test skips on a laptop and fails under CI=true."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from django.conf import settings


def missing(reason: str) -> None:
    if settings.CI:
        pytest.fail(f"CI=true and the deployment tests cannot run: {reason}")
    pytest.skip(reason)


def binary(name: str, package: str) -> Path:
    """The path of ``name`` (``LTT_<NAME>`` overrides it): on PATH, or in /usr/sbin (not on a user's PATH)."""
    override = os.environ.get(f"LTT_{name.upper().replace('-', '_')}")
    found = override or shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if not found or not os.access(found, os.X_OK):
        missing(f"no {name} (apt-get install {package}, or `make test-deps`)")
    return Path(str(found))
