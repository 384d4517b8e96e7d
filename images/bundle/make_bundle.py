"""Makes a self-contained /opt/preload in the builder stage of images/bundle/Dockerfile, run by the
Python of a virtual environment where preload is installed (images/python's /opt/preload, moved):

    /opt/preload-venv/bin/python3 make_bundle.py /opt/preload

DEST gets a copy of the interpreter (bin/python3), its standard library without what the agent
never uses, the environment's packages (preload and its dependencies; not pip) in
lib/pythonX.Y/site-packages, and every shared library that the
interpreter and the extension modules need, with the glibc loader, in lib/. The interpreter's ELF
interpreter and everyone's rpath are rewritten to DEST/lib, so the bundle runs in an image without
/lib64 or any libc, and no LD_LIBRARY_PATH is needed (the application never inherits one).
The hooks (libpreload*.so) are left alone: the application's programs load them with their own
loader and libc (glibc's, or musl's for libpreload-musl.so). The tracer is static.
"""
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"
# never imported by the agent: tests, GUIs, build and packaging tools, documentation data
PRUNED_DIRS = {"test", "tests", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "distutils",
               "pydoc_data", "venv", "sqlite3", "dbm", "curses", "__pycache__", "site-packages",
               "dist-packages", f"config-{VERSION}-{getattr(sys.implementation, '_multiarch', '')}"}
PRUNED_MODULES = re.compile(r"^(_test|_ctypes_test|xx|_xx|_tkinter|_curses|readline|nis|ossaudiodev|audioop|"
                            r"_dbm|_gdbm|_sqlite3|_crypt)")


def is_elf(path):
    with open(path, "rb") as f:
        return f.read(4) == b"\x7fELF"


def needed(path):
    """{soname: resolved path} of everything `path` loads, as the builder's loader resolves it."""
    out = subprocess.run(["ldd", str(path)], capture_output=True, text=True, check=True).stdout
    return dict(re.findall(r"^\s*(\S+) => (/\S+)", out, re.M))


def loader(path):
    return subprocess.run(["patchelf", "--print-interpreter", str(path)], capture_output=True, text=True,
                          check=True).stdout.strip()


def copy_stdlib(dest):
    stdlib = Path(sysconfig.get_paths()["stdlib"])

    def ignore(directory, names):
        return [n for n in names if n in PRUNED_DIRS or PRUNED_MODULES.match(n)]

    shutil.copytree(stdlib, dest / "lib" / f"python{VERSION}", ignore=ignore, symlinks=False)
    dynload = dest / "lib" / f"python{VERSION}" / "lib-dynload"
    if not dynload.exists():  # a build that keeps it elsewhere
        shutil.copytree(Path(sysconfig.get_config_var("DESTSHARED")), dynload, ignore=ignore)


def main(dest):
    dest = Path(dest)
    lib = dest / "lib"
    (dest / "bin").mkdir(parents=True)
    lib.mkdir()
    python = dest / "bin" / "python3"
    shutil.copy2(os.path.realpath(sys.executable), python)
    copy_stdlib(dest)
    shutil.copytree(sysconfig.get_paths()["purelib"], lib / f"python{VERSION}" / "site-packages",
                    ignore=shutil.ignore_patterns("pip", "pip-*", "setuptools", "setuptools-*", "pkg_resources",
                                                  "_distutils_hack", "*.pth", "__pycache__"))

    # sys.path exactly this, whatever PYTHONPATH or a site directory the application's image has
    (dest / "bin" / "python3._pth").write_text(
        f"../lib/python{VERSION}\n../lib/python{VERSION}/lib-dynload\n../lib/python{VERSION}/site-packages\n")
    (dest / "bin" / "preload").write_text(
        f"#!{python}\nimport sys\nfrom preload.cli import main\nsys.exit(main())\n")
    (dest / "bin" / "preload").chmod(0o755)

    elves = [python] + [p for p in sorted(lib.rglob("*.so*")) if not p.name.startswith("libpreload") and is_elf(p)]
    libs = {}
    for elf in elves:
        libs.update(needed(elf))
    # glibc loads it itself when a thread is cancelled or unwinds: not a DT_NEEDED anywhere
    cache = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
    libs.update(re.findall(r"^\s*(libgcc_s\.so\.1) \(libc6,[^)]*\) => (/\S+)", cache, re.M)[:1])
    interp = loader(python)
    for soname, path in libs.items():
        shutil.copy2(os.path.realpath(path), lib / soname)
    shutil.copy2(os.path.realpath(interp), lib / os.path.basename(interp))

    rpath = str(lib.absolute())
    subprocess.run(["patchelf", "--set-interpreter", f"{rpath}/{os.path.basename(interp)}", str(python)],
                   check=True)
    glibc = {os.path.basename(interp), "libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2"}
    for elf in elves + [lib / s for s in libs if s not in glibc]:
        # DT_RPATH, not DT_RUNPATH: it also applies to what these libraries load in turn
        subprocess.run(["patchelf", "--force-rpath", "--set-rpath", rpath, str(elf)], check=True)
    # byte code once, here, rather than at every start of the agent
    subprocess.run([str(python), "-m", "compileall", "-q", "-j0", str(lib / f"python{VERSION}")], check=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
