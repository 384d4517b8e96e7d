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


def need_32_bit():
    """gcc -m32 can build a program (x86's 32-bit ABI), or unavailable()."""
    if not os.path.exists("/usr/lib32/crt1.o"):
        unavailable("no 32-bit C library to build against (Debian package: gcc-multilib)")
