"""preload.elf: which executables the LD_PRELOAD hook can attach to, on real binaries built here."""
import errno
import json
import os
import platform
import shutil
import subprocess

import pytest

from preload import elf
from preload.elf import KINDS, classify, format_text, to_dict
from agent import preload
from tools import need, need_32_bit

HELLO_C = '#include <stdio.h>\nint main(void) { puts("hi"); return 0; }\n'
HELLO_GO = 'package main\n\nimport "fmt"\n\nfunc main() { fmt.Println("hi") }\n'
# import "C" forces cgo, hence external linking with gcc: a dynamically linked Go program.
CGO_GO = ('package main\n\n// int answer(void) { return 42; }\nimport "C"\nimport "fmt"\n\n'
          'func main() { fmt.Println(C.answer()) }\n')


def _program(directory, name, *flags, compiler=("gcc", "gcc"), runs=True):
    """Compile HELLO_C and check that it really runs, so the binary is not a toolchain accident."""
    source = directory / "hello.c"
    source.write_text(HELLO_C)
    exe = directory / name
    subprocess.run([need(*compiler), *flags, "-o", str(exe), str(source)], check=True)
    if runs:
        assert subprocess.run([str(exe)], capture_output=True, text=True).stdout == "hi\n"
    return str(exe)


def _script(directory, name, text, mode=0o755):
    path = directory / name
    path.write_text(text)
    path.chmod(mode)
    return str(path)


def _without_section_headers(path, out):
    """Copy an ELF64 with e_shoff, e_shnum and e_shstrndx zeroed: the kernel still runs it."""
    data = bytearray(open(path, "rb").read())
    data[0x28:0x30] = bytes(8)  # e_shoff
    data[0x3c:0x40] = bytes(4)  # e_shnum, e_shstrndx
    out.write_bytes(data)
    out.chmod(0o755)
    return str(out)


def _check(t, kind, attach):
    assert t.kind in KINDS
    assert (t.kind, t.attach) == (kind, attach), t.reason
    assert t.reason


@pytest.fixture(scope="session")
def go_programs(tmp_path_factory):
    """Go builds are slow the first time: build once per session, with a private cache and HOME."""
    go = need("go", "golang-go")
    build = tmp_path_factory.mktemp("go")
    env = dict(os.environ, HOME=str(build), GOCACHE=str(build / "cache"),
               GOPATH=str(build / "gopath"), GOTOOLCHAIN="local", GOPROXY="off", GOFLAGS="")
    programs = {}
    for name, source, cgo, ldflags in [("static", HELLO_GO, "0", ""),
                                       ("no-buildid", HELLO_GO, "0", "-buildid="),
                                       ("cgo", CGO_GO, "1", "")]:
        (build / f"{name}.go").write_text(source)
        exe = str(build / name)
        subprocess.run([go, "build", f"-ldflags={ldflags}", "-o", exe, f"{name}.go"], cwd=build,
                       env=dict(env, CGO_ENABLED=cgo), check=True, capture_output=True)
        programs[name] = exe
    return programs


def test_dynamic_c_program_is_glibc_and_preloadable(tmp_path):
    t = classify(_program(tmp_path, "dynamic"))
    _check(t, "dynamic-glibc", "preload")
    assert t.libc == "glibc" and t.agent == "libpreload.so"
    assert "ld-linux" in t.interpreter
    assert t.machine == platform.machine()


def test_static_c_program_needs_ptrace(tmp_path):
    t = classify(_program(tmp_path, "static", "-static"))
    _check(t, "static", "ptrace")
    assert t.interpreter is None and t.libc is None
    assert t.agent == "preload-trace"


def test_static_pie_is_told_apart_from_dynamic_pie_and_needs_ptrace(tmp_path):
    # Both are ET_DYN: only the missing PT_INTERP says static-pie.
    t = classify(_program(tmp_path, "static-pie", "-static-pie"))
    _check(t, "static-pie", "ptrace")
    assert t.interpreter is None


def test_system_shell_is_dynamic_glibc():
    t = classify("/bin/sh")
    _check(t, "dynamic-glibc", "preload")
    assert t.path == "/bin/sh"
    assert t.realpath == os.path.realpath("/bin/sh")


def test_glibc_is_recognised_from_dt_needed_when_the_loader_name_is_unfamiliar(tmp_path):
    # It cannot run (that loader does not exist): classification needs only its headers.
    exe = _program(tmp_path, "custom", "-Wl,--dynamic-linker=/lib/ld-custom.so.2", runs=False)
    t = classify(exe)
    _check(t, "dynamic-glibc", "preload")
    assert t.interpreter == "/lib/ld-custom.so.2"


def test_unknown_loader_without_libc_is_dynamic_other(tmp_path):
    source = tmp_path / "start.c"
    source.write_text("void _start(void) { for (;;) ; }\n")
    exe = tmp_path / "other"
    subprocess.run([need("gcc", "gcc"), "-nostdlib", "-Wl,--dynamic-linker=/lib/ld-other.so.1",
                    "-o", str(exe), str(source)], check=True)
    t = classify(str(exe))
    _check(t, "dynamic-other", "preload")
    assert t.libc is None


def test_dynamic_musl_program_is_musl_and_preloadable(tmp_path):
    t = classify(_program(tmp_path, "musl", compiler=("musl-gcc", "musl-tools")))
    _check(t, "dynamic-musl", "preload")
    assert t.libc == "musl" and t.agent == "libpreload-musl.so"
    assert "ld-musl" in t.interpreter


def test_static_musl_program_needs_ptrace(tmp_path):
    t = classify(_program(tmp_path, "musl-static", "-static", compiler=("musl-gcc", "musl-tools")))
    _check(t, "static", "ptrace")
    assert t.agent == "preload-trace"


def test_static_go_program_needs_ptrace(go_programs):
    t = classify(go_programs["static"])
    _check(t, "go", "ptrace")
    assert t.interpreter is None


def test_cgo_program_is_go_even_when_dynamically_linked(go_programs):
    # Go makes raw syscalls whatever the linking, so the hook would miss most of them.
    t = classify(go_programs["cgo"])
    _check(t, "go", "ptrace")
    assert "ld-linux" in t.interpreter and t.libc == "glibc"
    assert t.agent == "preload-trace"  # not the glibc hook its loader could take


@pytest.mark.parametrize("name", ["static", "no-buildid", "cgo"])
def test_go_program_without_section_headers_is_still_go(go_programs, tmp_path, name):
    # "static" keeps its Go note; "no-buildid" has none, so only the build-info magic remains.
    exe = _without_section_headers(go_programs[name], tmp_path / name)
    assert subprocess.run([exe], capture_output=True).returncode == 0
    _check(classify(exe), "go", "ptrace")


def test_c_program_without_section_headers_is_not_mistaken_for_go(tmp_path):
    exe = _without_section_headers(_program(tmp_path, "static", "-static"), tmp_path / "bare")
    assert subprocess.run([exe], capture_output=True, text=True).stdout == "hi\n"
    _check(classify(exe), "static", "ptrace")


def test_shell_script_takes_attach_from_its_interpreter(tmp_path):
    t = classify(_script(tmp_path, "run.sh", "#!/bin/sh\necho hi\n"))
    _check(t, "script", "preload")
    assert t.interpreter == "/bin/sh"
    assert t.script_target.kind == "dynamic-glibc"


def test_shebang_options_are_not_part_of_the_interpreter(tmp_path):
    t = classify(_script(tmp_path, "run.sh", "#! /bin/sh -eu\t\necho hi\n"))
    _check(t, "script", "preload")
    assert t.interpreter == "/bin/sh"


@pytest.mark.parametrize("shebang", ["#!/usr/bin/env python3", "#!/usr/bin/env -S python3 -u"])
def test_env_script_is_classified_by_the_program_found_on_path(tmp_path, shebang):
    t = classify(_script(tmp_path, "run.py", f"{shebang}\nprint('hi')\n"))
    python3 = shutil.which("python3")
    assert t.kind == "script" and t.interpreter == "/usr/bin/env"
    assert t.script_target.path == python3
    assert t.attach == classify(python3).attach != "none"


def test_script_with_missing_interpreter_cannot_attach(tmp_path):
    t = classify(_script(tmp_path, "run", "#!/nonexistent/interp\n"))
    _check(t, "script", "none")
    assert t.script_target.kind == "missing" and t.agent is None
    assert "/nonexistent/interp" in t.reason


def test_env_script_with_unknown_program_cannot_attach(tmp_path):
    t = classify(_script(tmp_path, "run", "#!/usr/bin/env no-such-program-preload\n"))
    _check(t, "script", "none")
    assert "no-such-program-preload" in t.reason


def test_script_run_by_a_musl_program_is_watched_with_the_musl_hook(tmp_path):
    interp = _program(tmp_path, "musl-interp", compiler=("musl-gcc", "musl-tools"))
    t = classify(_script(tmp_path, "run", f"#!{interp}\n"))
    _check(t, "script", "preload")
    assert t.agent == "libpreload-musl.so"


def test_script_run_by_another_script_follows_the_chain(tmp_path):
    inner = _script(tmp_path, "inner", "#!/bin/sh\necho hi\n")
    t = classify(_script(tmp_path, "outer", f"#!{inner}\n"))
    _check(t, "script", "preload")
    assert t.script_target.script_target.kind == "dynamic-glibc"


def test_script_that_is_its_own_interpreter_stops_without_recursing_forever(tmp_path):
    path = tmp_path / "loop"
    _script(tmp_path, "loop", f"#!{path}\n")
    t = classify(str(path))
    _check(t, "script", "none")
    assert "levels" in t.reason


@pytest.mark.parametrize("text", ["echo hi\n", ""], ids=["text", "empty"])
def test_text_file_with_exec_bit_is_not_elf_and_the_kernel_refuses_it(tmp_path, text):
    path = _script(tmp_path, "plain", text)
    _check(classify(path), "not-elf", "none")
    with pytest.raises(OSError) as refused:
        subprocess.run([path])
    assert refused.value.errno == errno.ENOEXEC


def test_missing_path_is_reported_not_raised(tmp_path):
    path = str(tmp_path / "nothing")
    t = classify(path)
    _check(t, "missing", "none")
    assert t.realpath == path


def test_nul_byte_in_a_path_or_a_shebang_is_not_raised(tmp_path):
    _check(classify(str(tmp_path / "bad\0name")), "missing", "none")
    # The kernel reads the #! line as a C string: it ends at the NUL.
    t = classify(_script(tmp_path, "run.sh", "#!/bin/sh\0garbage\n"))
    _check(t, "script", "preload")
    assert t.interpreter == "/bin/sh"


def test_file_without_exec_bit_is_not_executable(tmp_path):
    path = _script(tmp_path, "run.sh", "#!/bin/sh\n", mode=0o644)
    _check(classify(path), "not-executable", "none")


def test_directory_is_not_executable(tmp_path):
    _check(classify(str(tmp_path)), "not-executable", "none")


def test_truncated_elf_is_reported_not_raised(tmp_path):
    path = tmp_path / "truncated"
    path.write_bytes(open("/bin/true", "rb").read(100))
    path.chmod(0o755)
    t = classify(str(path))
    _check(t, "not-elf", "none")
    assert "parsed" in t.reason


def test_changed_file_is_reclassified(tmp_path):
    path = _script(tmp_path, "changing", "plain text\n")
    _check(classify(path), "not-elf", "none")
    # Same size and inode: only the new mtime tells the cache that the content changed.
    mtime = os.stat(path).st_mtime_ns
    with open(path, "w") as f:
        f.write("#!/bin/sh\n\n")
    os.utime(path, ns=(mtime, mtime + 1_000_000_000))
    _check(classify(path), "script", "preload")


def test_unchanged_file_is_answered_from_the_cache_under_the_path_given(tmp_path, monkeypatch):
    real = _script(tmp_path, "real", "#!/bin/sh\n")
    classify(real)
    (tmp_path / "link").symlink_to(real)
    monkeypatch.setattr(elf, "_inspect", lambda *args: pytest.fail("file read again"))
    link = str(tmp_path / "link")
    t = classify(link)
    assert (t.path, t.realpath, t.kind) == (link, os.path.realpath(real), "script")


def test_cache_drops_the_oldest_entries_when_full(tmp_path, monkeypatch):
    monkeypatch.setattr(elf, "_cache", {})
    monkeypatch.setattr(elf, "_CACHE_MAX", 2)
    paths = [_script(tmp_path, f"text{i}", "plain text\n") for i in range(3)]
    for path in paths:
        classify(path)
    assert [key[0] for key in elf._cache] == [os.path.realpath(p) for p in paths[1:]]


def test_to_dict_is_json_serialisable_with_the_nested_interpreter(tmp_path):
    t = classify(_script(tmp_path, "run.sh", "#!/bin/sh\n"))
    d = json.loads(json.dumps(to_dict(t)))
    assert d["kind"] == "script"
    assert d["script_target"]["kind"] == "dynamic-glibc"
    assert d["script_target"]["script_target"] is None


def test_format_text_prints_one_aligned_line_per_target(tmp_path):
    targets = [classify(p) for p in ["/bin/sh", str(tmp_path / "nothing"),
                                      _script(tmp_path, "run.sh", "#!/bin/sh\n")]]
    lines = format_text(targets).splitlines()
    assert len(lines) == len(targets)
    kind_column = max(len(t.path) for t in targets) + 2
    attach_column = kind_column + max(len(t.kind) for t in targets) + 2
    agent_column = attach_column + max(len(t.attach) for t in targets) + 2
    for line, t in zip(lines, targets):
        assert line.startswith(t.path + " ")
        assert line[kind_column:].startswith(t.kind + " ")
        assert line[attach_column:].startswith(t.attach + " ")
        assert line[agent_column:].startswith((t.agent or "-") + " ")
        assert line.endswith(t.reason)


def test_inspect_command_names_the_hook_or_the_tracer_each_program_gets(tmp_path):
    programs = {"libpreload.so": _program(tmp_path, "dynamic"),
                "libpreload-musl.so": _program(tmp_path, "musl", compiler=("musl-gcc", "musl-tools")),
                "preload-trace": _program(tmp_path, "static", "-static")}
    r = preload("inspect", *programs.values(), state_dir=tmp_path)
    assert (r.returncode, r.stderr) == (0, b"")  # every agent is installed: no warning
    lines = r.stdout.decode().splitlines()
    assert [line.split()[3] for line in lines] == list(programs)


def test_32_bit_program_is_foreign_and_goes_to_the_tracer_which_follows_what_it_starts(tmp_path):
    need_32_bit()
    t = classify(_program(tmp_path, "p32", "-m32"))
    _check(t, "foreign", "ptrace")  # the tracer cannot read its calls, but follows what it starts
    assert (t.machine, t.agent) == ("i386", "preload-trace")
    from preload._native import lib
    from preload.supervisor import elf_kind, hook_for, needs_tracer

    assert elf_kind(t.path) == lib.PRELOAD_ELF_FOREIGN and hook_for(elf_kind(t.path)) is None
    assert needs_tracer(t.path)


def test_exec_time_decision_agrees_with_inspect(tmp_path, go_programs):
    """The hook and `preload run` decide from the ELF headers in C (csrc/elfkind.c) at every exec;
    they must choose the attachment that `preload inspect` explains."""
    from preload.supervisor import needs_tracer

    static = _program(tmp_path, "static", "-static")
    targets = [
        _program(tmp_path, "dynamic"), static, _program(tmp_path, "static-pie", "-static-pie"),
        _program(tmp_path, "musl-static", "-static", compiler=("musl-gcc", "musl-tools")),
        _program(tmp_path, "musl-dynamic", compiler=("musl-gcc", "musl-tools")),
        *go_programs.values(),
        _script(tmp_path, "by-sh", "#!/bin/sh\necho hi\n"),
        _script(tmp_path, "by-static", f"#!{static}\n"),
    ]
    for target in targets:
        assert needs_tracer(target) == (classify(target).attach == "ptrace"), target
