"""Programs the tests need from the system."""
import functools
import os
import shutil
import subprocess
import tempfile

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


@functools.cache
def _runs_32_bit():
    """'' when gcc -m32 builds a program that this kernel runs, else why not."""
    with tempfile.TemporaryDirectory() as d:
        src, exe = os.path.join(d, "t.c"), os.path.join(d, "t")
        with open(src, "w") as f:
            f.write("int main(void) { return 0; }\n")
        if subprocess.run(["gcc", "-m32", "-o", exe, src], capture_output=True).returncode:
            return "gcc -m32 cannot build a program (Debian package: gcc-multilib, on amd64)"
        try:
            return "" if subprocess.run([exe]).returncode == 0 else "a 32-bit program fails here"
        except OSError as e:
            return f"this kernel runs no 32-bit program ({e.strerror})"


def need_32_bit():
    """gcc -m32 builds programs (x86's 32-bit ABI) that this kernel runs, or unavailable(); a skip
    on other machines, which have no such programs to test."""
    if os.uname().machine != "x86_64":
        pytest.skip("32-bit programs are tested on x86_64")
    if _runs_32_bit():
        unavailable(_runs_32_bit())
