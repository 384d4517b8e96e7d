"""Build glue that pyproject.toml cannot express: the cffi extension and libpreload.so.

libpreload.so is the LD_PRELOAD object. It is built as a setuptools Extension only to reuse the
compiler setup; it contains no Python code, links against nothing but libc, and is installed as
preload/libpreload.so so that the package finds it beside itself.
"""
import glob
import os

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HOOK = "preload.libpreload"


class BuildExt(build_ext):
    def get_ext_filename(self, fullname):
        # called with the dotted name or its last part, depending on the code path
        if fullname in (HOOK, HOOK.rpartition(".")[2]):
            return os.path.join(*fullname.split(".")[:-1], "libpreload.so")
        return super().get_ext_filename(fullname)

    def get_export_symbols(self, ext):
        return [] if ext.name == HOOK else super().get_export_symbols(ext)

    def build_extension(self, ext):
        if ext.name != HOOK:
            return super().build_extension(ext)
        # The interpreter's link flags may carry its own rpath and library dirs: not ours to keep.
        saved = self.compiler.linker_so
        self.compiler.linker_so = [a for a in saved if not a.startswith(("-L", "-Wl,-rpath"))]
        try:
            super().build_extension(ext)
        finally:
            self.compiler.linker_so = saved


hook = Extension(
    HOOK,
    sources=sorted(glob.glob("csrc/hook/*.c")) + ["csrc/record.c", "csrc/paths.c", "csrc/netaddr.c"],
    depends=["csrc/preload_wire.h", "csrc/common.h", "csrc/hook/hook.h"],
    extra_compile_args=[
        "-fvisibility=hidden", "-fno-delete-null-pointer-checks", "-Wall", "-Wextra",
        "-Wno-nonnull-compare", "-O2",
    ],
    # -z now: no lazy binding inside hooks, whose stack may be a small thread's or a signal's
    extra_link_args=["-Wl,-z,defs", "-Wl,-z,now", "-Wl,--as-needed"],
)

setup(
    ext_modules=[hook],
    cffi_modules=["csrc/native_build.py:ffibuilder"],
    cmdclass={"build_ext": BuildExt},
)
