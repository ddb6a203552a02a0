"""System packages some tests need, found the way the engine finds them, and a way to hide them.

``SYNCVID_TEST_HIDE="espeak-ng chromium"`` makes the tests behave as on a machine without those
packages (their tests skip, named in the summary), to check the suite on a machine that has them.
``make test`` installs them where it can (scripts/system_packages.sh).
"""

from __future__ import annotations

import os
import shutil

import pytest

from realtime.visemes import espeak

HIDE_ENV = "SYNCVID_TEST_HIDE"
# Debian package -> what its tests use it for
PACKAGES = {
    "espeak-ng": "the viseme training data (synthesised speech and its phonemes)",
    "chromium": "the browser page in a real headless browser",
}
SKIP_PREFIX = "needs Debian's "


def hidden() -> set[str]:
    return set(os.environ.get(HIDE_ENV, "").replace(",", " ").split())


def _present(package: str) -> bool:
    if package == "espeak-ng":
        return espeak.available()
    if package == "chromium":
        return shutil.which("chromium") is not None or shutil.which("chromium-browser") is not None
    raise ValueError(f"unknown system package {package!r}; known: {sorted(PACKAGES)}")


def available(package: str) -> bool:
    return package not in hidden() and _present(package)


def needs(package: str) -> pytest.MarkDecorator:
    """Marks a test (or a module, as ``pytestmark``) that cannot run without ``package``."""
    why = "hidden by " + HIDE_ENV if package in hidden() else "not installed"
    return pytest.mark.skipif(not available(package),
                              reason=f"{SKIP_PREFIX}{package} ({why}; apt-get install {package})")
