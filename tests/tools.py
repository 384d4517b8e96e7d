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
    reason = _runs_32_bit()
    if reason:
        unavailable(reason)


def build(directory, name, source, *flags):
    """directory/name compiled from the C source text (gcc, with flags such as -static or -m32)."""
    src = os.path.join(directory, f"{name}.c")
    with open(src, "w") as f:
        f.write(source)
    exe = os.path.join(directory, name)
    subprocess.run(["gcc", "-std=gnu11", "-Wall", *flags, "-o", exe, src], check=True)
    return exe


def plain(argv, env=None, **kw):
    """The program without the hook (with env added to the environment), for comparison."""
    base = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "PRELOAD_SOCKET")}
    env = {**base, **(env or {})}
    if kw.get("input") is None:
        kw["stdin"] = subprocess.DEVNULL
    return subprocess.run(argv, env=env, capture_output=True, timeout=30, **kw)
