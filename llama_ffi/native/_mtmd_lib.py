"""The libmtmd boundary: finds, loads and checks libmtmd (images and audio in), beside libllama.

libmtmd is optional: nothing here runs at ``import llama_ffi``, and text-only use never opens
it. Its declarations (``_cffi_mtmd``) include libllama's, so the model and context pointers
of :mod:`.model` and :mod:`.context` pass to it unchanged. libllama is loaded (and checked)
first; libmtmd links against it, and the dynamic loader reuses the copy already loaded.

Search order (the first that loads wins; a failure lists every place tried):
  1. the ``path`` given to :func:`load_mtmd`
  2. ``$LLAMA_FFI_MTMD_LIBRARY`` (a file)
  3. the folder of the loaded libllama (``vendor/lib``, ``llama_ffi/lib`` in a wheel,
     ``$LLAMA_FFI_LIB_DIR``): the libmtmd built with it
  4. the system's loader search path

The checks mirror libllama's: every declared ``mtmd_*`` function must resolve (an older
libmtmd lacks ``mtmd_helper_init_opt_default``, which came with the by-value option argument
of ``mtmd_helper_bitmap_init_from_buf``), the struct layouts must be the compiler's, and the
``*_default()`` structs and default media marker must hold what the generating build returned.
A mismatch raises :class:`LibraryVersionError` before anything calls the library.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

from ..errors import LibraryNotFoundError, LibraryVersionError
from ._lib import get_lib, library_path

__all__ = ["load_mtmd", "mtmd_available", "mtmd_library_path"]

_LIB_NAMES = {"darwin": ("libmtmd.dylib",), "win32": ("mtmd.dll",)}.get(sys.platform, ("libmtmd.so", "libmtmd.so.0"))
_lock = threading.Lock()
_mtmd = None
_mtmd_path: str | None = None


def _modules():
    """The generated modules, imported on first use (absent when generated without mtmd.h)."""
    try:
        from . import _abi_mtmd
        from ._cffi_mtmd import ffi
    except ImportError as exc:
        raise LibraryNotFoundError(f"this llama_ffi has no libmtmd declarations ({exc}); regenerate them with "
                                   "build_ffi.py after scripts/build_libllama.py built libmtmd") from None
    return ffi, _abi_mtmd


def candidate_paths(path: str | os.PathLike | None = None) -> list[str]:
    """Where to look for libmtmd, in order (libllama must be loaded first)."""
    out: list[str] = []
    if path is not None:
        p = Path(path)
        out.append(str(p / _LIB_NAMES[0] if p.is_dir() else p))
    if os.environ.get("LLAMA_FFI_MTMD_LIBRARY"):
        out.append(os.environ["LLAMA_FFI_MTMD_LIBRARY"])
    llama = library_path()
    if llama and os.sep in llama:
        out += [os.path.join(os.path.dirname(llama), name) for name in _LIB_NAMES]
    out.append(_LIB_NAMES[0])
    return out


def _open_first(ffi, candidates: list[str]):
    tried = []
    for candidate in candidates:
        if os.sep in candidate and not os.path.exists(candidate):
            tried.append(f"{candidate}: no such file")
            continue
        try:
            return ffi.dlopen(candidate), candidate
        except OSError as exc:
            tried.append(f"{candidate}: {exc}")
    raise LibraryNotFoundError(
        "could not load libmtmd (image and audio input); tried, in order:\n  " + "\n  ".join(tried) +
        "\nscripts/build_libllama.py builds it beside libllama (unless --no-mtmd was given); "
        "or point LLAMA_FFI_MTMD_LIBRARY at one.", tried=tried)


def check_library(ffi, abi, lib, path: str) -> None:
    """Refuse a libmtmd that does not match the generated declarations."""
    needed = f"llama_ffi needs the libmtmd built from llama.cpp {abi.LLAMA_CPP_COMMIT} beside its libllama"
    missing = []
    for name in abi.FUNCTIONS:
        try:
            getattr(lib, name)
        except (AttributeError, ffi.error):
            missing.append(name)
    if missing:
        shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
        raise LibraryVersionError(f"{path} lacks {len(missing)} functions the declarations need ({shown}). {needed}.")
    for struct, layout in abi.STRUCT_LAYOUT.items():
        ctype = "struct " + struct
        if ffi.sizeof(ctype) != layout["size"] or any(
                ffi.offsetof(ctype, field) != offset for field, offset in layout["offsets"].items()):
            raise LibraryVersionError(f"{ctype} in the declarations disagrees with the C compiler; "
                                      "regenerate with build_ffi.py")
    for struct, recorded in abi.DEFAULTS.items():
        ctype, func_name = "struct " + struct, recorded["function"]
        if ffi.sizeof(ctype) <= 16:
            continue  # returned in registers: not probed through the oversized buffer below
        # A 4 KiB return buffer: a library whose struct grew cannot write past it.
        guarded = ffi.cast("struct llama_ffi_return_guard (*)(void)", ffi.addressof(lib, func_name))
        result = guarded()
        values = ffi.cast(ctype + " *", ffi.addressof(result))
        for field, want in recorded["values"].items():
            got = getattr(values, field)
            if float(got) != float(want):
                raise LibraryVersionError(f"{path}: {func_name}().{field} is {got}, expected {want}: its struct "
                                          f"{struct} does not match the declarations. {needed}.")
    marker = ffi.string(lib.mtmd_default_marker()).decode(errors="replace")
    if abi.DEFAULT_MARKER is not None and marker != abi.DEFAULT_MARKER:
        raise LibraryVersionError(f"{path}: default media marker is {marker!r}, expected {abi.DEFAULT_MARKER!r}. "
                                  f"{needed}.")


def load_mtmd(path: str | os.PathLike | None = None):
    """Load and check libmtmd (once per process, after libllama); return its cffi ``lib``."""
    global _mtmd, _mtmd_path
    with _lock:
        if _mtmd is not None:
            if path is not None and os.path.realpath(path) != os.path.realpath(_mtmd_path or ""):
                raise LibraryVersionError(f"libmtmd is already loaded from {_mtmd_path}; cannot also load {path}")
            return _mtmd
        ffi, abi = _modules()
        get_lib()  # libllama first: checked, and the copy libmtmd's NEEDED entry resolves to
        lib, found = _open_first(ffi, candidate_paths(path))
        check_library(ffi, abi, lib, found)
        from . import logs  # clip.cpp's messages (why a projector failed to load) go where libllama's go

        if logs._callback is not None:
            # the same C function; cffi keeps function-pointer types per ffi instance, hence the cast
            lib.mtmd_helper_log_set(ffi.cast("ggml_log_callback", logs._callback), ffi.NULL)
        _mtmd, _mtmd_path = lib, found
        return lib


def mtmd_available() -> bool:
    """Whether libmtmd loads and matches (never raises; loads it on first call)."""
    try:
        load_mtmd()
    except (LibraryNotFoundError, LibraryVersionError):
        return False
    return True


def mtmd_library_path() -> str | None:
    """Path of the loaded libmtmd, or None before anything loaded it."""
    return _mtmd_path


def get_ffi():
    """libmtmd's cffi ``ffi`` (its types include libllama's)."""
    return _modules()[0]
