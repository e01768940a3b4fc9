"""The package's layers, as imports: each module imports only from the layers it sits on.

Every module under ``llama_ffi/`` is parsed (nothing is imported), relative imports are
resolved, and ``from llama_ffi import Name`` is followed through the lazy map to the module
that defines ``Name``. Function-level and ``TYPE_CHECKING`` imports count like any other:
a lazy import still makes the lower layer depend on the upper one. docs/architecture.md
draws the same table.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

import llama_ffi

PACKAGE = Path(llama_ffi.__file__).parent
ROOT = "llama_ffi"

# Each layer and the layers it may import besides itself, bottom up. "" is the package's own
# __init__ (lazy public names): eagerly it imports only the errors, so `import llama_ffi` stays
# cheap, and importing its eager names is importing the errors.
MAY_IMPORT: dict[str, frozenset[str]] = {
    "errors": frozenset(),
    "": frozenset({"errors"}),
    # the C boundary: nothing above it, so presentation and policy are handed in (progress=)
    "native": frozenset({"errors"}),
    # pure Python: grammars are parsed and checked before any of them reaches C
    "grammar": frozenset({"errors"}),
    # one request's sampling, stops, logprobs and text, shared by Llama and Engine
    "generation": frozenset({"errors", "native", "grammar"}),
    # templates, families, reasoning, tool calls: may use generation's text helpers;
    # generation, engine and native never see chat
    "chat": frozenset({"errors", "native", "grammar", "generation"}),
    # peers over generation: the batching engine and the llama-cpp-python facade never
    # import each other; chat is applied above the engine (server) and inside Llama
    "engine": frozenset({"errors", "native", "grammar", "generation"}),
    "llama": frozenset({"errors", "native", "grammar", "generation", "chat", "display"}),
    "server": frozenset({"errors", "native", "grammar", "generation", "chat", "engine", "llama"}),
    # what people see (notebook views, progress bars): used by llama and cli only
    "display": frozenset({"errors"}),
    "cli": frozenset({"errors", "native", "grammar", "generation", "chat", "engine", "llama", "server",
                      "display"}),
}

# The C boundary: outside native/, nothing reaches cffi or native's private modules (_lib
# hands out ffi/lib, _cffi_llama is the generated module, _abi the generated data).
C_BOUNDARY_PREFIXES = ("cffi", f"{ROOT}.native._")


def module_name(path: Path) -> tuple[str, bool]:
    """(dotted name, is a package) of a file under llama_ffi/."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def all_modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name, is_pkg = module_name(path)
        out[name] = (path, is_pkg)
    return out


def layer_of(module: str) -> str:
    """The layer a module of llama_ffi belongs to: its first name below the package."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def targets(node: ast.Import | ast.ImportFrom, module: str, is_pkg: bool, known: set[str]) -> list[str]:
    """The llama_ffi modules an import statement reaches (others are dropped)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        package = module if is_pkg else module.rpartition(".")[0]
        base = importlib.util.resolve_name("." * node.level + (node.module or ""), package) if node.level \
            else node.module or ""
        names = []
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            if base == ROOT and alias.name in llama_ffi._LAZY:
                names.append(llama_ffi._LAZY[alias.name])  # followed through the lazy map
            else:
                names.append(sub if sub in known else base)
    return [n for n in names if n == ROOT or n.startswith(ROOT + ".") or n.split(".")[0] == "cffi"]


def violations(module: str, source: str, is_pkg: bool, known: set[str]) -> list[str]:
    """Every import in ``source`` that points up the layers or across the C boundary."""
    layer = layer_of(module)
    if layer not in MAY_IMPORT:
        return [f"{module}: top-level name {layer!r} has no layer (add it to MAY_IMPORT and docs/architecture.md)"]
    allowed = MAY_IMPORT[layer] | {layer}
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        for target in targets(node, module, is_pkg, known):
            where = f"{module}:{node.lineno} imports {target}"
            if layer != "native" and target.startswith(C_BOUNDARY_PREFIXES):
                found.append(f"{where} (only native/ touches cffi and its private modules)")
                continue
            if target.split(".")[0] == "cffi":
                continue
            to = layer_of(target) or "errors"  # the root's eager names are the errors
            if to not in allowed:
                found.append(f"{where} ({layer or 'llama_ffi'} may import only {sorted(MAY_IMPORT[layer])})")
    return found


def test_every_import_points_down():
    modules = all_modules()
    known = set(modules)
    found = []
    for name, (path, is_pkg) in modules.items():
        found += violations(name, path.read_text(encoding="utf-8"), is_pkg, known)
    assert not found, "imports against the layering:\n  " + "\n  ".join(found)


def test_every_layer_exists():
    """The table names real packages, so a rename cannot silently drop a rule."""
    tops = {layer_of(name) for name in all_modules()}
    assert set(MAY_IMPORT) == tops, (set(MAY_IMPORT) ^ tops)


@pytest.mark.parametrize("module, source, is_pkg", [
    ("llama_ffi.native.model", "from ..display.progress import tqdm_class", False),
    ("llama_ffi.native", "from llama_ffi import Llama", True),  # through the lazy map
    ("llama_ffi.native.model", "def f():\n    from ..llama import Llama\n", False),  # a lazy import too
    ("llama_ffi.engine.engine", "from ..llama.session import Session", False),  # peers
    ("llama_ffi.llama.llama", "import llama_ffi.engine.engine", False),
    ("llama_ffi.generation.spec", "from ..chat import pipeline", False),
    ("llama_ffi.grammar.gbnf", "from ..native.sampler import Sampler", False),
    ("llama_ffi.server.app", "from ..display import show", False),
    ("llama_ffi.chat.pipeline", "from ..native._lib import ffi", False),  # past the C boundary
    ("llama_ffi", "from .llama import Llama", True),  # import llama_ffi must stay cheap
    ("llama_ffi.loose", "import os", False),  # a new top-level module needs a layer
])
def test_an_upward_import_is_caught(module, source, is_pkg):
    known = set(all_modules())
    assert violations(module, source, is_pkg, known), f"{module}: {source!r} was not caught"


@pytest.mark.parametrize("module, source, is_pkg", [
    ("llama_ffi.native.model", "from .gguf_guard import check_gguf_file\nfrom ..errors import ModelLoadError", False),
    ("llama_ffi.cli.generate", "from .. import __version__\nfrom ..llama import Llama", False),
    ("llama_ffi.server.registry", "from llama_ffi import Engine, ValidationError", False),
    ("llama_ffi.llama.llama", "from ..display.progress import load_progress", False),
])
def test_a_downward_import_passes(module, source, is_pkg):
    known = set(all_modules())
    assert violations(module, source, is_pkg, known) == []


def test_public_names_resolve():
    """Every name in ``llama_ffi.__all__`` is there, and each lazy name comes from the module
    the map names (so the layering test follows real edges)."""
    missing = [name for name in llama_ffi.__all__ if not hasattr(llama_ffi, name)]
    assert not missing
    assert llama_ffi.__all__ == sorted(llama_ffi.__all__)
    for name, module in llama_ffi._LAZY.items():
        value = getattr(importlib.import_module(module), name)
        assert getattr(llama_ffi, name) is value, name
    for name in ("Llama", "LlamaRAMCache", "LlamaCache", "BaseLlamaCache", "LlamaTokenizer", "LlamaGrammar"):
        assert name in llama_ffi.__all__  # as llama_cpp exports them
