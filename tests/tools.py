"""Programs the tests need from the system."""
import os
import shutil

import pytest


def need(program, package):
    """The program's path. Missing: a skip on a developer's machine, a failure in CI (where
    .ci/run installs every package the suite needs, so absence is a broken install step)."""
    path = shutil.which(program)
    if path is None:
        message = f"`{program}` is not installed (Debian package: {package})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path
