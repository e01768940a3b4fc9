"""The C boundary: finds, loads and checks libllama, and hands out ``ffi`` / ``lib``.

Only modules inside ``llama_ffi.native`` touch ``ffi`` and the library; everything
above them calls Python methods. Loading is lazy: ``import llama_ffi`` opens nothing.

Search order (the first that loads wins; a failure lists every place tried):
  1. the ``path`` given to :func:`load_library`
  2. ``$LLAMA_FFI_LIBRARY`` (a file), then ``$LLAMA_FFI_LIB_DIR`` (a folder)
  3. libraries bundled in the package (``llama_ffi/lib/``, as wheels ship them)
  4. the repository's ``vendor/lib`` (what ``scripts/build_libllama.py`` builds)
  5. the system's loader search path (``libllama.so``)

A CUDA wheel does not carry the CUDA runtime or cuBLAS: it depends on NVIDIA's registry
wheels, and its ``lib/preload.txt`` names the sonames to take from them. Before opening a
libllama that has such a file beside it, :func:`_preload` dlopens each one found under
``site-packages/nvidia/*/lib/``, so the dynamic loader reuses them for libggml-cuda's
NEEDED entries; one not found is left to the system (a local toolkit).

A library that loads is then checked against the generated declarations before
anything calls it; a mismatch raises :class:`LibraryVersionError`.
"""

from __future__ import annotations

import atexit
import ctypes
import glob
import os
import sys
import threading
from pathlib import Path

from ..errors import LibraryNotFoundError, LibraryVersionError
from . import _abi
from ._cffi_llama import ffi

__all__ = ["ffi", "get_lib", "library_path", "load_library", "is_shutting_down"]

_PACKAGE_DIR = Path(__file__).resolve().parents[1]
_LIB_NAME = {"darwin": "libllama.dylib", "win32": "llama.dll"}.get(sys.platform, "libllama.so")
_lock = threading.Lock()
_lib = None
_lib_path: str | None = None
_shutting_down = False


def _mark_shutdown() -> None:
    # After this, close() and __del__ leave C objects alone: freeing them while the
    # interpreter and the library tear down in an unknown order is what crashes.
    global _shutting_down
    _shutting_down = True


atexit.register(_mark_shutdown)


def is_shutting_down() -> bool:
    return _shutting_down


def candidate_paths(path: str | os.PathLike | None = None) -> list[str]:
    """Where to look for libllama, in order."""
    out: list[str] = []
    if path is not None:
        p = Path(path)
        out.append(str(p / _LIB_NAME if p.is_dir() else p))
    if os.environ.get("LLAMA_FFI_LIBRARY"):
        out.append(os.environ["LLAMA_FFI_LIBRARY"])
    if os.environ.get("LLAMA_FFI_LIB_DIR"):
        out.append(str(Path(os.environ["LLAMA_FFI_LIB_DIR"]) / _LIB_NAME))
    out.append(str(_PACKAGE_DIR / "lib" / _LIB_NAME))
    out.append(str(_PACKAGE_DIR.parent / "vendor" / "lib" / _LIB_NAME))
    out.append(_LIB_NAME)  # bare name: the system loader's own search
    return out


def _preload(lib_dir: str, search_path: list[str] | None = None) -> list[str]:
    """Load the CUDA libraries ``lib_dir/preload.txt`` names from NVIDIA's wheels.

    Returns the paths loaded. Runs only when libllama is first loaded, never at import;
    without a preload.txt (every CPU build) it costs one ``stat``.
    """
    listing = os.path.join(lib_dir, "preload.txt")
    if not os.path.exists(listing):
        return []
    with open(listing, encoding="utf-8") as f:
        sonames = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    loaded = []
    for soname in sonames:
        for entry in search_path if search_path is not None else sys.path:
            hits = sorted(glob.glob(os.path.join(entry or ".", "nvidia", "*", "lib", soname)))
            if hits:
                try:  # RTLD_GLOBAL: libggml-cuda, loaded later, must see the symbols
                    ctypes.CDLL(hits[0], mode=ctypes.RTLD_GLOBAL)
                except OSError:
                    continue  # unusable copy: the system loader may still find another
                loaded.append(hits[0])
                break
    return loaded


def _share_libstdcxx() -> None:
    """Put libstdc++ in the process's global symbol scope before libllama is opened.

    Seen on the GPU machine (Ubuntu's Python 3.12 with numpy imported first): llama.cpp's
    C++ code resolved some standard-library symbols to another copy than its own and
    crashed in the tokenizer's std::regex setup at model load. With the shared libstdc++
    global, every library resolves them to the same copy. Harmless where it is already so.
    """
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL("libstdc++.so.6", mode=ctypes.RTLD_GLOBAL)
        except OSError:
            pass  # a libllama linked statically against libstdc++ does not need it


def _open_first(candidates: list[str]):
    _share_libstdcxx()
    tried = []
    for candidate in candidates:
        is_file_path = os.sep in candidate
        if is_file_path and not os.path.exists(candidate):
            tried.append(f"{candidate}: no such file")
            continue
        if is_file_path:
            _preload(os.path.dirname(candidate))
        try:
            return ffi.dlopen(candidate), candidate, tried
        except OSError as exc:
            tried.append(f"{candidate}: {exc}")
    lines = "\n  ".join(tried)
    raise LibraryNotFoundError(
        "could not load libllama; tried, in order:\n  " + lines +
        "\nBuild it with `python scripts/build_libllama.py`, or point LLAMA_FFI_LIBRARY at one.",
        tried=tried)


def _check_symbols(lib, path: str) -> None:
    missing = []
    for name in _abi.FUNCTIONS:
        try:
            getattr(lib, name)
        except (AttributeError, ffi.error):
            missing.append(name)
    if missing:
        shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
        raise LibraryVersionError(
            f"{path} lacks {len(missing)} functions the declarations need ({shown}); "
            f"it is not a build of llama.cpp {_abi.LLAMA_CPP_COMMIT}. {_NEEDED_BUILD}")


def _check_commit(lib, path: str) -> None:
    found = ffi.string(lib.ggml_commit()).decode(errors="replace")
    expected = _abi.LLAMA_CPP_COMMIT
    if found == "unknown" or expected == "unknown":
        return  # built without git: the layout check below still applies
    found_hash = found.removesuffix("-dirty")
    if not (found_hash.startswith(expected) or expected.startswith(found_hash)):
        raise LibraryVersionError(
            f"{path} was built from llama.cpp commit {found}, but the declarations were "
            f"generated from {expected}. {_NEEDED_BUILD}")


def _check_layout() -> None:
    """The generated cffi module must agree with what the C compiler reported."""
    for struct, layout in _abi.STRUCT_LAYOUT.items():
        ctype = "struct " + struct
        if ffi.sizeof(ctype) != layout["size"]:
            raise LibraryVersionError(f"sizeof({ctype}) is {ffi.sizeof(ctype)} in the declarations but "
                                      f"{layout['size']} for the C compiler; regenerate with build_ffi.py")
        for field, offset in layout["offsets"].items():
            if ffi.offsetof(ctype, field) != offset:
                raise LibraryVersionError(f"offsetof({ctype}, {field}) disagrees with the C compiler; "
                                          "regenerate with build_ffi.py")


def _check_defaults(lib, path: str) -> None:
    """Call each *_default_params() and compare with the values recorded at generation.

    A struct that grew or moved fields in the library shows up as different values here.
    Only structs larger than 16 bytes are probed: those come back through a pointer we
    supply, and we supply a 4 KiB one, so even a larger struct cannot overrun it.
    """
    for struct, recorded in _abi.DEFAULTS.items():
        ctype, func_name = "struct " + struct, recorded["function"]
        if ffi.sizeof(ctype) <= 16:
            continue
        guarded = ffi.cast("struct llama_ffi_return_guard (*)(void)", ffi.addressof(lib, func_name))
        result = guarded()
        values = ffi.cast(ctype + " *", ffi.addressof(result))
        for field, want in recorded["values"].items():
            got = getattr(values, field)
            if float(got) != float(want):
                raise LibraryVersionError(
                    f"{path}: {func_name}().{field} is {got}, expected {want}: the library's "
                    f"struct {struct} does not match the declarations. {_NEEDED_BUILD}")


_NEEDED_BUILD = (f"llama_ffi needs libllama built from llama.cpp {_abi.LLAMA_CPP_COMMIT} "
                 "(`python scripts/build_libllama.py` builds it).")


def load_library(path: str | os.PathLike | None = None):
    """Load and check libllama (once per process); return the cffi ``lib``.

    Calling it again returns the library already loaded; asking for a different
    ``path`` after one is loaded raises, since two libllamas cannot share a process.
    """
    global _lib, _lib_path
    with _lock:
        if _lib is not None:
            if path is not None and os.path.realpath(path) != os.path.realpath(_lib_path or ""):
                raise LibraryVersionError(f"libllama is already loaded from {_lib_path}; "
                                          f"cannot also load {path}")
            return _lib
        lib, found, _ = _open_first(candidate_paths(path))
        _check_symbols(lib, found)
        _check_layout()
        _check_commit(lib, found)
        _check_defaults(lib, found)
        from . import logs  # imported here: nothing is hooked until a library is loaded
        logs.install(lib)
        lib.llama_backend_init()
        if lib.ggml_backend_dev_count() == 0:  # a GGML_BACKEND_DL build: backends are plugins
            lib.ggml_backend_load_all_from_path(os.path.dirname(found).encode() or ffi.NULL)
        _lib, _lib_path = lib, found
        return lib


def get_lib():
    """The loaded library, loading it with the default search on first use."""
    return _lib if _lib is not None else load_library()


def library_path() -> str | None:
    """Path of the loaded libllama, or None before anything loaded it."""
    return _lib_path
