"""Build glue that pyproject.toml cannot express: the cffi extension, libpreload.so and the tracer.

libpreload.so is the LD_PRELOAD object. It is built as a setuptools Extension only to reuse the
compiler setup; it contains no Python code, links against nothing but libc, and is installed as
preload/libpreload.so so that the package finds it beside itself. libpreload-musl.so is the same
sources built with musl-gcc, for programs linked against musl; without musl-gcc the build goes on
without it, and such programs run unwatched. preload-trace, the tracer and its launcher, is linked
statically: the launcher runs in place of a traced program and must not load the hook, and the
bundle image copies it into images that have no libc at all.
"""
import glob
import os
import shutil
import subprocess

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HOOK = "preload.libpreload"
SHARED_C = ["csrc/record.c", "csrc/paths.c", "csrc/netaddr.c"]  # the hook's and the tracer's
TRACER = "preload-trace"
HOOK_SOURCES = sorted(glob.glob("csrc/hook/*.c")) + SHARED_C + ["csrc/elfkind.c"]  # decides at exec
HOOK_CFLAGS = ["-fvisibility=hidden", "-fno-delete-null-pointer-checks", "-Wall", "-Wextra",
               "-Wno-nonnull-compare", "-O2"]
# -z now: no lazy binding inside hooks, whose stack may be a small thread's or a signal's
HOOK_LDFLAGS = ["-Wl,-z,defs", "-Wl,-z,now", "-Wl,--as-needed"]
MUSL_HOOK = "libpreload-musl.so"


class BuildExt(build_ext):
    def run(self):
        super().run()
        out_dir = os.path.dirname(self.get_ext_fullpath(HOOK))  # beside the hook, in the package
        self.build_tracer(out_dir)
        self.build_musl_hook(out_dir)

    def build_tracer(self, out_dir):
        objects = self.compiler.compile(sorted(glob.glob("csrc/trace/*.c")) + SHARED_C,
                                        output_dir=self.build_temp,
                                        extra_postargs=["-O2", "-Wall", "-Wextra", "-fno-strict-aliasing"],
                                        depends=["csrc/preload_wire.h", "csrc/common.h", "csrc/trace/trace.h"])
        self.compiler.link_executable(objects, TRACER, output_dir=out_dir,
                                      extra_postargs=["-static", "-pthread", "-s"])

    def build_musl_hook(self, out_dir):
        musl_gcc = shutil.which("musl-gcc")
        if not musl_gcc:
            self.warn(f"musl-gcc not found (Debian package musl-tools): {MUSL_HOOK} is not built, "
                      "and programs linked against musl will run unwatched")
            return
        # musl ships no kernel headers: borrow the system's (linux/, asm/), after musl's own
        kernel = os.path.join(self.build_temp, "musl-kernel-headers")
        os.makedirs(kernel, exist_ok=True)
        arch = subprocess.run([musl_gcc, "-print-multiarch"], capture_output=True,
                              text=True).stdout.strip()
        for name in ("linux", "asm", "asm-generic"):
            found = [d for d in (f"/usr/include/{arch}/{name}", f"/usr/include/{name}")
                     if os.path.isdir(d)]
            link = os.path.join(kernel, name)
            if found and not os.path.lexists(link):
                os.symlink(found[0], link)
        # musl's crti.o leaves _init and _fini visible (glibc's hides them): only hooks are exported
        exports = os.path.join(self.build_temp, "musl-exports.map")
        with open(exports, "w") as f:
            f.write("{ local: _init; _fini; };\n")
        self.spawn([musl_gcc, "-shared", "-fPIC", *HOOK_CFLAGS, "-idirafter", kernel,
                    "-o", os.path.join(out_dir, MUSL_HOOK), *HOOK_SOURCES, *HOOK_LDFLAGS,
                    f"-Wl,--version-script={exports}"])

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
    sources=HOOK_SOURCES,
    depends=["csrc/preload_wire.h", "csrc/common.h", "csrc/hook/hook.h"],
    extra_compile_args=HOOK_CFLAGS,
    extra_link_args=HOOK_LDFLAGS,
)

setup(
    ext_modules=[hook],
    cffi_modules=["csrc/native_build.py:ffibuilder"],
    cmdclass={"build_ext": BuildExt},
)
