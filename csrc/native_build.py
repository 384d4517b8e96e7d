"""cffi build script for preload._native (run standalone by cffi: no package imports here).

The cdef is the wire header itself, so the daemon decodes exactly what the hook encodes."""
import os

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))


def wire_cdef(header_text):
    """The header minus what cdef cannot parse (it holds only defines, structs and prototypes)."""
    return "\n".join(line for line in header_text.splitlines() if not line.startswith("#include"))


with open(os.path.join(HERE, "preload_wire.h")) as f:
    WIRE = f.read()
with open(os.path.join(HERE, "native.h")) as f:
    NATIVE = f.read()

ffibuilder = FFI()
ffibuilder.cdef(wire_cdef(WIRE) + wire_cdef(NATIVE))
ffibuilder.set_source(
    "preload._native",
    '#include <stdint.h>\n#include <stddef.h>\n#include "preload_wire.h"\n#include "native.h"\n',
    sources=[os.path.relpath(os.path.join(HERE, n)) for n in ("wire.c", "native.c", "elfkind.c")],
    include_dirs=[os.path.relpath(HERE)],
    extra_compile_args=["-Wall", "-Wextra"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
