#!/usr/bin/env python3
"""Build libllama and ggml as shared libraries into vendor/.

Sources, in order of preference:
  --build-dir DIR    an existing llama.cpp build: its libraries are copied, nothing is compiled
  --source-dir DIR   a local llama.cpp checkout
  (default)          the pinned tree inside the llama-cpp-python sdist, fetched from the
                     registry with pip and checked against its sha256

Result: vendor/include (headers), vendor/lib (libllama, libggml*, libmtmd), vendor/bin (native
tools when asked for), vendor/manifest.json (source hash, commit, flags, sha256 of each
library), and vendor/llama.cpp -> the source tree. Builds live in a cache keyed by source
and flags (~/.cache/llama_ffi, or $LLAMA_FFI_CACHE), so a repeated setup with the same
inputs copies instead of rebuilding.

libmtmd (llama.cpp's tools/mtmd: images and audio in, a plain C API over ggml and
libllama) is built beside libllama unless --no-mtmd is given. Its CMake target is already
configured by LLAMA_BUILD_TOOLS=ON below, so asking for it adds one target, not a flag:
the build directory (and its cache key) stay the same.

Variants: CPU (portable: x86-64-v3 baseline, never GGML_NATIVE: the builder's CPU is not
the user's, and native AMX builds crash on the first decode on these machines), or CUDA
with --cuda [--cuda-arch 90]. RPC is on in both. Optional system libraries that a wheel
cannot carry stay out of the link even where the build machine has them: NCCL (ggml-cuda
would need libnccl.so.2) and RDMA for RPC (libibverbs.so.1), both seen on the GPU machine.
Pass --cmake-arg=-DGGML_CUDA_NCCL=ON for a local multi-GPU build that wants NCCL.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import registry

REPO = Path(__file__).resolve().parents[1]
VENDOR = REPO / "vendor"
CACHE = Path(os.environ.get("LLAMA_FFI_CACHE", Path.home() / ".cache" / "llama_ffi"))

# The pinned source: llama-cpp-python's sdist carries the whole llama.cpp tree.
PINNED = {
    "package": "llama-cpp-python",
    "version": "0.3.36",
    "sdist": "llama_cpp_python-0.3.36.tar.gz",
    "sha256": "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e",
    "llama_cpp_commit": "0c1e57098",
    "size": "76 MB",
}
LIB_GLOBS = ("libllama.so*", "libggml*.so*", "libmtmd.so*", "libllama.dylib", "libggml*.dylib", "libmtmd.dylib")
MTMD_HEADERS = ("tools/mtmd/mtmd.h", "tools/mtmd/mtmd-helper.h")
TOOL_SETS = {
    "simple": ["llama-simple"],
    "bench": ["llama-bench", "llama-batched-bench", "llama-simple"],
    "all": ["llama-bench", "llama-batched-bench", "llama-simple", "llama-server", "llama-quantize"],
}
MANIFEST_LAYOUT = 3  # bump when what install() writes changes, so old vendor/ trees are redone
PORTABLE_X86 = ["-DGGML_AVX=ON", "-DGGML_AVX2=ON", "-DGGML_FMA=ON", "-DGGML_F16C=ON"]


def log(msg: str) -> None:
    print(f"[build_libllama] {msg}", flush=True)


sha256_file = registry.sha256

def tree_hash(root: Path) -> str:
    """Content hash of the parts of a llama.cpp tree that affect the libraries."""
    h = hashlib.sha256()
    for sub in ("CMakeLists.txt", "cmake", "include", "src", "ggml", "common", "tools", "examples"):
        base = root / sub
        files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
        for path in files:
            h.update(str(path.relative_to(root)).encode() + b"\0")
            h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def fetch_pinned_source() -> tuple[Path, dict]:
    """Download (once) and unpack (once) the pinned sdist; return the llama.cpp tree."""
    downloads = CACHE / "downloads"
    tarball = downloads / PINNED["sdist"]
    if not tarball.exists():
        log(f"downloading {PINNED['package']}=={PINNED['version']} sdist ({PINNED['size']})")
    # A plain download checked by sha256: `pip download` would prepare the sdist's metadata,
    # which needs its build backend (scikit-build-core) installed first.
    tarball = registry.fetch(PINNED["package"], PINNED["sdist"], PINNED["sha256"], downloads)
    tree = CACHE / "src" / f"llama.cpp-{PINNED['llama_cpp_commit']}"
    if not (tree / "include" / "llama.h").exists():
        log(f"unpacking llama.cpp into {tree}")
        with tempfile.TemporaryDirectory(dir=CACHE) as tmp, tarfile.open(tarball) as tar:
            prefix = f"llama_cpp_python-{PINNED['version']}/vendor/llama.cpp/"
            members = [m for m in tar.getmembers() if m.name.startswith(prefix)]
            tar.extractall(tmp, members=members, filter="data")
            if tree.exists():
                shutil.rmtree(tree)
            tree.parent.mkdir(parents=True, exist_ok=True)
            Path(tmp, prefix).rename(tree)
    return tree, {"kind": "pinned-sdist", "sdist_sha256": PINNED["sha256"],
                  "llama_cpp_commit": PINNED["llama_cpp_commit"]}


def local_commit(tree: Path) -> str:
    try:
        return subprocess.run(["git", "-C", str(tree), "rev-parse", "--short=9", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def cmake_flags(args) -> list[str]:
    flags = ["-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=ON", "-DGGML_NATIVE=OFF",
             "-DGGML_RPC=ON", "-DGGML_RPC_RDMA=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_OPENSSL=OFF",
             "-DLLAMA_BUILD_APP=OFF", "-DCMAKE_BUILD_WITH_INSTALL_RPATH=ON",
             # Libraries find each other next to themselves; tools find them in ../lib.
             "-DCMAKE_INSTALL_RPATH=$ORIGIN;$ORIGIN/../lib"]
    # Tools are configured always and built only when asked for, so asking for them
    # later reuses the same build directory instead of starting over.
    flags += ["-DLLAMA_BUILD_EXAMPLES=ON", "-DLLAMA_BUILD_TOOLS=ON", "-DLLAMA_BUILD_SERVER=ON",
              "-DLLAMA_BUILD_COMMON=ON"]
    if args.cuda:
        flags += ["-DGGML_CUDA=ON", f"-DCMAKE_CUDA_ARCHITECTURES={args.cuda_arch}", "-DGGML_CUDA_NCCL=OFF"]
    if platform.machine().lower() in ("x86_64", "amd64"):
        flags += PORTABLE_X86
    return flags + list(args.cmake_arg or [])


def build(tree: Path, source_id: str, args) -> Path:
    """Configure and build in a cache directory keyed by source and flags."""
    flags = cmake_flags(args)
    key = hashlib.sha256(json.dumps([source_id, flags, str(tree)]).encode()).hexdigest()[:16]
    build_dir = CACHE / "build" / key
    targets = ["llama", "ggml", "ggml-rpc"] + (["mtmd"] if args.mtmd else []) + tool_list(args)
    if args.cuda:
        targets.append("ggml-cuda")
    env = dict(os.environ)
    if source_id.startswith("pinned"):
        # ggml_commit() asks git; the sdist has no .git, so answer with the pinned commit
        # rather than whatever repository the tree happens to sit in.
        flags = flags + [f"-DGIT_EXE={REPO / 'scripts' / 'pinned_git.sh'}"]
        env["LLAMA_FFI_PINNED_COMMIT"] = PINNED["llama_cpp_commit"]
    check_toolchain(args.cuda)
    if not (build_dir / "CMakeCache.txt").exists():
        log(f"configuring in {build_dir}")
        generator = ["-G", "Ninja"] if shutil.which("ninja") else []
        done = subprocess.run(["cmake", "-S", str(tree), "-B", str(build_dir), *generator, *flags], env=env,
                              stdout=None if args.verbose else subprocess.DEVNULL)
        if done.returncode:
            shutil.rmtree(build_dir, ignore_errors=True)  # a half-configured cache would be reused
            raise BuildError("cmake could not configure llama.cpp (its messages are above); "
                             "rerun with --verbose for the full log")
    log(f"building {' '.join(targets)} with {args.jobs} jobs")
    done = subprocess.run(["cmake", "--build", str(build_dir), "-j", str(args.jobs), "--target", *targets], env=env)
    if done.returncode:
        raise BuildError(f"compiling llama.cpp failed (the compiler's messages are above); "
                         f"fix the toolchain and run the same command again, it resumes in {build_dir}")
    return build_dir / "bin"


class BuildError(RuntimeError):
    """A build step failed; the message is one line for the user."""


def check_toolchain(cuda: bool) -> None:
    """Name what is missing before cmake prints a page about it."""
    needed = {"cmake": "cmake", "c++ compiler": ("c++", "g++", "clang++"), "c compiler": ("cc", "gcc", "clang")}
    if cuda:
        needed["nvcc"] = "nvcc"
    missing = [what for what, names in needed.items()
               if not any(shutil.which(n) for n in ([names] if isinstance(names, str) else names))]
    if missing:
        raise BuildError(f"building libllama needs {', '.join(missing)}, not found on PATH: install them "
                         f"(Debian/Ubuntu: apt-get install cmake g++) or pass --build-dir with an existing build")


def tool_list(args) -> list[str]:
    if not args.tools:
        return []
    return TOOL_SETS.get(args.tools, [t for t in args.tools.split(",") if t])


def install(bin_dir: Path, tree: Path, manifest: dict, tools: list[str]) -> None:
    """Copy headers, libraries and tools into vendor/ and write the manifest."""
    for sub in ("include", "lib", "bin"):
        shutil.rmtree(VENDOR / sub, ignore_errors=True)
        (VENDOR / sub).mkdir(parents=True)
    # libmtmd (and its headers, which build_ffi.py keys on) only where it was asked for and built:
    # a --no-mtmd run over a build directory that once made it must not ship a stale copy.
    with_mtmd = manifest.get("mtmd", True) and any(bin_dir.glob("libmtmd.*"))
    headers = [tree / "include" / "llama.h", *(tree / "ggml" / "include").glob("*.h")]
    if with_mtmd:
        headers += [tree / h for h in MTMD_HEADERS]
    for header in headers:
        shutil.copy2(header, VENDOR / "include")
    libs = {}
    for pattern in LIB_GLOBS:
        if pattern.startswith("libmtmd") and not with_mtmd:
            continue
        for lib in sorted(bin_dir.glob(pattern)):
            dest = VENDOR / "lib" / lib.name
            if lib.is_symlink():
                os.symlink(os.readlink(lib), dest)
            else:
                shutil.copy2(lib, dest)
                libs[lib.name] = sha256_file(dest)
    if not any(name.startswith("libllama") for name in libs):
        sys.exit(f"no libllama found in {bin_dir}")
    for tool in tools:
        if (bin_dir / tool).exists():
            shutil.copy2(bin_dir / tool, VENDOR / "bin" / tool)
    if tools:  # libraries only the tools link (libllama-common, libllama-<tool>-impl...) sit
        # beside them in bin/ (their RUNPATH has $ORIGIN), keeping lib/ to what the binding loads
        core = {p.name for pattern in LIB_GLOBS for p in bin_dir.glob(pattern)}
        for lib in sorted(bin_dir.glob("*.so*")):
            if lib.name not in core:
                dest = VENDOR / "bin" / lib.name
                os.symlink(os.readlink(lib), dest) if lib.is_symlink() else shutil.copy2(lib, dest)
    link = VENDOR / "llama.cpp"
    if link.is_symlink() or link.exists():
        if link.is_symlink() or link.resolve() != tree.resolve():
            link.unlink() if link.is_symlink() else shutil.rmtree(link)
    if not link.exists():
        link.symlink_to(tree, target_is_directory=True)
    manifest["libraries"] = libs
    manifest["tools"] = sorted(p.name for p in (VENDOR / "bin").iterdir() if ".so" not in p.name)
    (VENDOR / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    log(f"installed {len(libs)} libraries into {VENDOR / 'lib'}")


def up_to_date(manifest: dict, tools: list[str]) -> bool:
    path = VENDOR / "manifest.json"
    if not path.exists():
        return False
    old = json.loads(path.read_text())
    same = all(old.get(k) == v for k, v in manifest.items())
    libs_ok = all((VENDOR / "lib" / name).exists() and sha256_file(VENDOR / "lib" / name) == digest
                  for name, digest in old.get("libraries", {}).items())
    return same and libs_ok and set(tools) <= set(old.get("tools", []))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group()
    src.add_argument("--source-dir", type=Path, help="a local llama.cpp checkout")
    src.add_argument("--build-dir", type=Path, help="an existing build: copy its libraries")
    p.add_argument("--cuda", action="store_true", help="build the CUDA backend")
    p.add_argument("--cuda-arch", default="90", help="CMAKE_CUDA_ARCHITECTURES (default 90)")
    p.add_argument("--tools", default="", help="native tools too: simple, bench, all, or a comma list")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    p.add_argument("--cmake-arg", action="append", help="extra -D flag passed to cmake")
    p.add_argument("--no-mtmd", dest="mtmd", action="store_false",
                   help="skip libmtmd (image/audio input); text-only builds save its compile time")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)

    tools = tool_list(args)
    if args.build_dir:
        tree = args.source_dir or (VENDOR / "llama.cpp").resolve()
        manifest = {"source": {"kind": "build-dir", "path": str(args.build_dir.resolve())},
                    "llama_cpp_commit": local_commit(tree), "flags": []}
        bin_dir = args.build_dir / "bin" if (args.build_dir / "bin").exists() else args.build_dir
        install(bin_dir, tree, manifest, tools)
        return 0
    if args.source_dir:
        tree = args.source_dir.resolve()
        source = {"kind": "local", "path": str(tree), "tree_sha256": tree_hash(tree)}
        commit = local_commit(tree)
    else:
        tree, source = fetch_pinned_source()
        commit = source["llama_cpp_commit"]
    manifest = {"layout": MANIFEST_LAYOUT, "source": source, "llama_cpp_commit": commit, "flags": cmake_flags(args),
                "cuda": bool(args.cuda), "machine": platform.machine(), "mtmd": bool(args.mtmd)}
    if up_to_date(manifest, tools):
        log("vendor/ is up to date with these inputs; nothing to do")
        return 0
    source_id = "pinned:" + PINNED["sha256"] if source["kind"] == "pinned-sdist" else "local:" + source["tree_sha256"]
    bin_dir = build(tree, source_id, args)
    install(bin_dir, tree, manifest, tools)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (registry.FetchError, BuildError) as exc:
        sys.exit(f"[build_libllama] error: {exc}")
