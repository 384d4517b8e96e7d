"""Programs the tests need from the system."""
import os
import shutil

import pytest


def unavailable(message):
    """Something the test needs is missing: a skip on a developer's machine, a failure in CI
    (where .ci/run installs everything the suite needs, so absence is a broken install step)."""
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def need(program, package):
    """The program's path, or unavailable()."""
    path = shutil.which(program)
    if path is None:
        unavailable(f"`{program}` is not installed (Debian package: {package})")
    return path
