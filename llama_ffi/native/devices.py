"""Backend devices ggml can run on (CPU, CUDA GPUs, RPC servers) and build facts."""

from __future__ import annotations

from dataclasses import dataclass

from ._lib import ffi, get_lib

# enum ggml_backend_dev_type
_DEVICE_TYPES = {0: "cpu", 1: "gpu", 2: "igpu", 3: "accel"}


@dataclass(frozen=True)
class Device:
    name: str
    description: str
    type: str
    memory_free: int
    memory_total: int


def devices() -> list[Device]:
    """Every device the loaded backends offer."""
    lib = get_lib()
    out = []
    for i in range(lib.ggml_backend_dev_count()):
        dev = lib.ggml_backend_dev_get(i)
        free, total = ffi.new("size_t *"), ffi.new("size_t *")
        lib.ggml_backend_dev_memory(dev, free, total)
        out.append(Device(
            name=ffi.string(lib.ggml_backend_dev_name(dev)).decode(),
            description=ffi.string(lib.ggml_backend_dev_description(dev)).decode(errors="replace"),
            type=_DEVICE_TYPES.get(int(lib.ggml_backend_dev_type(dev)), "unknown"),
            memory_free=int(free[0]), memory_total=int(total[0])))
    return out


def has_gpu() -> bool:
    return any(d.type in ("gpu", "igpu") for d in devices())


def system_info() -> dict[str, object]:
    """What the loaded library was built with and can do."""
    from ._lib import library_path

    lib = get_lib()
    return {
        "library": library_path(),
        "llama_version": ffi.string(lib.llama_version()).decode(),
        "ggml_commit": ffi.string(lib.ggml_commit()).decode(),
        "supports_gpu_offload": bool(lib.llama_supports_gpu_offload()),
        "supports_mmap": bool(lib.llama_supports_mmap()),
        "supports_rpc": bool(lib.llama_supports_rpc()),
        "features": ffi.string(lib.llama_print_system_info()).decode(errors="replace").strip(),
    }
