#!/usr/bin/env python3
"""Build a platform wheel of llama_ffi with the prebuilt libllama inside it.

    python scripts/build_wheel.py                 # CPU wheel from vendor/lib into dist/
    python scripts/build_wheel.py --cuda --lib-dir DIR   # CUDA wheel from a CUDA build's libs

The CUDA libraries can be built on the GPU machine and packed anywhere: packing needs only
readelf and pip (which fetches hatchling, so run it where the registry is reachable).

How: ``pip wheel . --no-deps`` builds the pure-Python wheel with hatchling; this script then
rewrites it, adding the libraries under ``llama_ffi/lib/`` (where ``native/_lib.py`` looks
third) and replacing its tag and RECORD. Post-processing keeps the build backend untouched
and plain: no build hook has to know where a library came from.

What goes in:
  * every real library in the lib folder, named by its SONAME (``libggml-base.so.0``), since
    that is the name the others ask the dynamic loader for; a wheel cannot hold symlinks.
    libllama is stored as ``libllama.so``, the name the loader opens by path. The libraries
    find each other through RUNPATH ``$ORIGIN``, checked here with readelf.
  * libgomp (OpenMP, needed by ggml-cpu) copied from the system: slim images lack it, and
    the manylinux policies do not promise it (auditwheel grafts it the same way).
  * CUDA builds (``--cuda``): the CUDA runtime and cuBLAS are *not* copied. The wheel
    depends on NVIDIA's registry wheels instead, and ``llama_ffi/lib/preload.txt`` lists
    the sonames the loader preloads from them before libllama (see ``_lib._preload``).

Tag: ``py3-none-manylinux_2_X_<arch>``: no CPython extension is inside (cffi's ABI mode),
so any Python 3 works; X is the newest glibc any library needs (GLIBC_ symbol versions
from ``readelf -V``), raised where the libstdc++ symbols need a newer distribution than that
glibc implies (auditwheel's policy table). A CUDA wheel gets a ``+cuNN`` local version so
it cannot be mistaken for, or replace, the CPU one.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import platform
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Libraries every manylinux system provides (the policies' whitelist, the parts we meet).
SYSTEM_LIBS = {"libc.so.6", "libm.so.6", "libstdc++.so.6", "libgcc_s.so.1", "libdl.so.2",
               "libpthread.so.0", "librt.so.1", "ld-linux-x86-64.so.2", "ld-linux-aarch64.so.1"}
# Copied into the wheel from the build machine (GCC runtime library exception applies).
GRAFTED_LIBS = {"libgomp.so.1"}
# The CUDA driver comes with the GPU driver, never from a wheel.
DRIVER_LIBS = {"libcuda.so.1"}
# CUDA libraries taken from NVIDIA's wheels, by CUDA major: the requirement for each.
# From CUDA 13 NVIDIA publishes unsuffixed names (the -cu13 names are deprecated stubs),
# and the libraries live in site-packages/nvidia/cu13/lib; CUDA 12's in nvidia/<name>/lib.
CUDA_WHEELS = {
    "12": {"libcudart": "nvidia-cuda-runtime-cu12>=12,<13", "libcublas": "nvidia-cublas-cu12>=12,<13"},
    "13": {"libcudart": "nvidia-cuda-runtime>=13,<14", "libcublas": "nvidia-cublas>=13,<14"},
}
# Newest GLIBCXX_3.4.N that each manylinux glibc level guarantees, from auditwheel's policy
# table (2_28 = AlmaLinux 8 / GCC 8, 2_34 = AlmaLinux 9 / GCC 11, 2_35 = Ubuntu 22.04 / GCC 12,
# 2_39 = Ubuntu 24.04 / GCC 14): a library built with a newer GCC needs a newer distribution
# than its glibc symbols alone say.
GLIBCXX_FLOOR = [(19, 17), (22, 24), (25, 28), (28, 31), (29, 34), (30, 35), (33, 39)]


def log(msg: str) -> None:
    print(f"[build_wheel] {msg}", flush=True)


def readelf(*args: str) -> str:
    return subprocess.run(["readelf", *args], check=True, capture_output=True, text=True).stdout


def dynamic(path: Path) -> dict[str, list[str]]:
    """NEEDED, SONAME and RUNPATH entries of a shared library."""
    out: dict[str, list[str]] = {"NEEDED": [], "SONAME": [], "RUNPATH": [], "RPATH": []}
    for m in re.finditer(r"\((NEEDED|SONAME|RUNPATH|RPATH)\)\s+.*?\[(.*)\]", readelf("-d", "-W", str(path))):
        out[m.group(1)].append(m.group(2))
    return out


def symbol_versions(path: Path) -> set[str]:
    """Versions the library needs from others (GLIBC_2.34, GLIBCXX_3.4.30, ...)."""
    return set(re.findall(r"Name:\s+((?:GLIBC|GLIBCXX|CXXABI)_[0-9.]+)", readelf("-V", "-W", str(path))))


def _version(tag: str) -> tuple[int, ...]:
    return tuple(int(x) for x in tag.split("_", 1)[1].split("."))


def manylinux_tag(versions: set[str], arch: str) -> str:
    glibc = max((_version(v)[1] for v in versions if v.startswith("GLIBC_")), default=17)
    cxx = max(((_version(v) + (0, 0))[2] for v in versions if v.startswith("GLIBCXX_")), default=0)
    cxx_glibc = next((g for patch, g in GLIBCXX_FLOOR if cxx <= patch), None)
    if cxx_glibc is None:
        raise SystemExit(f"GLIBCXX_3.4.{cxx} is newer than any manylinux level known here")
    return f"manylinux_2_{max(17, glibc, cxx_glibc)}_{arch}"


def find_libraries(lib_dir: Path) -> dict[str, Path]:
    """Real library files by the name they get in the wheel."""
    libs: dict[str, Path] = {}
    for path in sorted(lib_dir.iterdir()):
        if path.is_symlink() or not path.is_file() or ".so" not in path.name:
            continue
        soname = (dynamic(path)["SONAME"] or [path.name])[0]
        name = "libllama.so" if soname.startswith("libllama.so") else soname
        libs[name] = path
    if "libllama.so" not in libs:
        raise SystemExit(f"no libllama in {lib_dir}: build it with scripts/build_libllama.py")
    return libs


def resolve_system_lib(soname: str, user: Path) -> Path:
    """Where the dynamic loader finds ``soname`` for ``user`` on this machine."""
    out = subprocess.run(["ldd", str(user)], check=True, capture_output=True, text=True).stdout
    m = re.search(rf"^\s*{re.escape(soname)} => (\S+)", out, re.MULTILINE)
    if not m:
        raise SystemExit(f"{soname} (needed by {user.name}) was not found on this machine")
    return Path(m.group(1)).resolve()


def plan(lib_dir: Path, cuda: bool) -> tuple[dict[str, Path], set[str], list[str], list[str]]:
    """(files to add, symbol versions, CUDA requirements, sonames to preload)."""
    libs = find_libraries(lib_dir)
    has_cuda = any(name.startswith("libggml-cuda") for name in libs)
    if has_cuda != cuda:
        raise SystemExit("this lib folder holds a CUDA build: pass --cuda" if has_cuda else
                         "--cuda given but there is no libggml-cuda in the lib folder")
    versions: set[str] = set()
    requirements: dict[str, str] = {}
    preload: list[str] = []
    for name, path in list(libs.items()):
        info = dynamic(path)
        if not any("$ORIGIN" in p for p in info["RUNPATH"] + info["RPATH"]):
            raise SystemExit(f"{path.name} has no $ORIGIN RUNPATH, so it would not find its "
                             "siblings inside the wheel; rebuild with scripts/build_libllama.py")
        versions |= symbol_versions(path)
        for needed in info["NEEDED"]:
            if needed in libs or needed in SYSTEM_LIBS or needed in DRIVER_LIBS:
                continue
            if needed.startswith("libllama.so") and "libllama.so" in libs:
                # libmtmd's NEEDED libllama.so.0: the loader opens libllama (SONAME libllama.so.0)
                # first, and the dynamic linker matches the NEEDED entry to that loaded copy
                continue
            if needed in GRAFTED_LIBS:
                libs[needed] = resolve_system_lib(needed, path)
                continue
            m = re.fullmatch(r"(libcudart|libcublas|libcublasLt)\.so\.(\d+)", needed)
            if m and cuda and m.group(2) in CUDA_WHEELS:
                wheel_key = "libcudart" if m.group(1) == "libcudart" else "libcublas"
                requirements[wheel_key] = CUDA_WHEELS[m.group(2)][wheel_key]
                preload.append(needed)
                continue
            raise SystemExit(f"{path.name} needs {needed}, which is neither bundled nor a "
                             "library every manylinux system has")
    for name, path in libs.items():
        if name in GRAFTED_LIBS:
            versions |= symbol_versions(path)
    # cuBLASLt before cuBLAS, the runtime first: each one's dependencies load before it.
    order = {"libcudart": 0, "libcublasLt": 1, "libcublas": 2}
    preload = sorted(set(preload), key=lambda s: order.get(s.split(".so")[0], 9))
    return libs, versions, sorted(requirements.values()), preload


def build_pure_wheel(out: Path) -> Path:
    log("building the pure-Python wheel with pip (hatchling)")
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--quiet",
                    "--disable-pip-version-check", "--wheel-dir", str(out)], check=True)
    (wheel,) = out.glob("llama_ffi-*.whl")
    return wheel


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def _rewrite_metadata(text: str, version: str, requirements: list[str]) -> str:
    text = re.sub(r"^Version: .*$", f"Version: {version}", text, count=1, flags=re.MULTILINE)
    head, sep, body = text.partition("\n\n")  # headers, then the long description
    extra = "".join(f"\nRequires-Dist: {r}" for r in requirements)
    return head + extra + sep + body


def repack(pure: Path, out_dir: Path, libs: dict[str, Path], tag: str, *, local: str | None,
           requirements: list[str], preload: list[str]) -> Path:
    """Write the platform wheel: pure wheel + libraries, new tag, version and RECORD."""
    name, version = pure.name.split("-")[:2]
    new_version = f"{version}+{local}" if local else version
    old_info, new_info = f"{name}-{version}.dist-info", f"{name}-{new_version}.dist-info"
    target = out_dir / f"{name}-{new_version}-py3-none-{tag}.whl"
    record: list[str] = []
    with zipfile.ZipFile(pure) as src, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as dst:
        def add(arcname: str, data: bytes, mode: int = 0o644) -> None:
            info = zipfile.ZipInfo(arcname, date_time=(2020, 1, 1, 0, 0, 0))  # reproducible
            info.external_attr = (0o100000 | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            dst.writestr(info, data)
            record.append(_record_line(arcname, data))

        for item in src.infolist():
            arcname = item.filename.replace(old_info + "/", new_info + "/", 1)
            if arcname == f"{new_info}/RECORD":
                continue
            data = src.read(item)
            if arcname == f"{new_info}/WHEEL":
                text = re.sub(r"^Root-Is-Purelib: .*$", "Root-Is-Purelib: false", data.decode(), flags=re.MULTILINE)
                text = re.sub(r"^Tag: .*\n", "", text, flags=re.MULTILINE).rstrip("\n") + f"\nTag: py3-none-{tag}\n"
                data = text.encode()
            elif arcname == f"{new_info}/METADATA":
                data = _rewrite_metadata(data.decode(), new_version, requirements).encode()
            add(arcname, data)
        for lib_name, path in sorted(libs.items()):
            add(f"llama_ffi/lib/{lib_name}", path.read_bytes(), 0o755)
        if preload:
            add("llama_ffi/lib/preload.txt", ("\n".join(preload) + "\n").encode())
        record.append(f"{new_info}/RECORD,,")
        dst.writestr(zipfile.ZipInfo(f"{new_info}/RECORD", date_time=(2020, 1, 1, 0, 0, 0)),
                     "\n".join(record) + "\n")
    return target


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lib-dir", type=Path, default=REPO / "vendor" / "lib")
    parser.add_argument("--out", type=Path, default=REPO / "dist")
    parser.add_argument("--cuda", action="store_true", help="the lib folder holds a CUDA build")
    args = parser.parse_args(argv)
    if not args.lib_dir.is_dir():
        raise SystemExit(f"{args.lib_dir} does not exist: run scripts/build_libllama.py first")
    libs, versions, requirements, preload = plan(args.lib_dir, args.cuda)
    tag = manylinux_tag(versions, platform.machine())
    local = None
    if args.cuda:
        majors = {re.search(r"\.so\.(\d+)", s).group(1) for s in preload}
        local = "cu" + "".join(sorted(majors))
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        pure = build_pure_wheel(Path(tmp))
        wheel = repack(pure, args.out, libs, tag, local=local, requirements=requirements, preload=preload)
    log(f"libraries: {', '.join(sorted(libs))}")
    log(f"wrote {wheel} ({wheel.stat().st_size / 1e6:.1f} MB)")
    return wheel


if __name__ == "__main__":
    main()
