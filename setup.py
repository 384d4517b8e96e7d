"""Build glue that pyproject.toml cannot express: the cffi extension, libpreload.so and the tracer.

libpreload.so is the LD_PRELOAD object. It is built as a setuptools Extension only to reuse the
compiler setup; it contains no Python code, links against nothing but libc, and is installed as
preload/libpreload.so so that the package finds it beside itself. preload-trace, the tracer and
its launcher, is linked statically: the launcher runs in place of a traced program and must not
load the hook, and the bundle image copies it into images that have no libc at all.
"""
import glob
import os

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HOOK = "preload.libpreload"
SHARED_C = ["csrc/record.c", "csrc/paths.c", "csrc/netaddr.c"]  # the hook's and the tracer's
TRACER = "preload-trace"


class BuildExt(build_ext):
    def run(self):
        super().run()
        self.build_tracer()

    def build_tracer(self):
        out_dir = os.path.dirname(self.get_ext_fullpath(HOOK))
        objects = self.compiler.compile(sorted(glob.glob("csrc/trace/*.c")) + SHARED_C,
                                        output_dir=self.build_temp,
                                        extra_postargs=["-O2", "-Wall", "-Wextra", "-fno-strict-aliasing"],
                                        depends=["csrc/preload_wire.h", "csrc/common.h", "csrc/trace/trace.h"])
        self.compiler.link_executable(objects, TRACER, output_dir=out_dir,
                                      extra_postargs=["-static", "-pthread", "-s"])

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
    sources=sorted(glob.glob("csrc/hook/*.c")) + SHARED_C + ["csrc/elfkind.c"],  # decides at exec
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
