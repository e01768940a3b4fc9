"""``Llama.from_pretrained`` and ``llama-ffi download``: fetch a GGUF from the Hugging Face hub.

``filename`` is a glob (``"*Q4_K_M.gguf"``) matched against the repository's file list; it
must match exactly one file. A split GGUF (``name-00001-of-00003.gguf``) brings all its
parts, and llama.cpp loads them from the first. ``additional_files`` (globs too) are
fetched next to it (e.g. a multimodal projector). Files land in the hub cache (or
``local_dir``) through ``huggingface_hub.hf_hub_download``, so repeated calls are offline.
"""

from __future__ import annotations

import fnmatch
import inspect
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..display.progress import tqdm_class
from ..errors import ModelLoadError, ValidationError

__all__ = ["download", "from_pretrained", "resolve_files", "split_parts"]

_SPLIT = re.compile(r"^(?P<stem>.*)-(?P<index>\d{5})-of-(?P<total>\d{5})\.gguf$")


def split_parts(filename: str) -> list[str]:
    """All parts of a split GGUF given any one of them; ``[filename]`` when not split."""
    match = _SPLIT.match(filename)
    if match is None:
        return [filename]
    total = int(match["total"])
    if total < 1 or int(match["index"]) > total:
        raise ValidationError(f"{filename!r} is not a valid split GGUF name", param="filename")
    return [f"{match['stem']}-{i:05d}-of-{total:05d}.gguf" for i in range(1, total + 1)]


def resolve_files(available: Sequence[str], pattern: str, *, param: str = "filename") -> list[str]:
    """The files to download for ``pattern``: one match, expanded to its split parts."""
    matches = sorted(f for f in available if fnmatch.fnmatch(f, pattern))
    firsts = [f for f in matches if _SPLIT.match(f) is None or int(_SPLIT.match(f)["index"]) == 1]
    if len({_group(f) for f in matches}) == 1:  # every match is a part of one split model
        firsts = firsts[:1] or matches[:1]
    if not firsts:
        raise ValidationError(f"no file matches {pattern!r}; available: {', '.join(sorted(available))}",
                              param=param)
    if len(firsts) > 1:
        raise ValidationError(f"multiple files match {pattern!r}: {', '.join(firsts)}", param=param)
    parts = split_parts(firsts[0])
    missing = [p for p in parts if p not in available]
    if missing:
        raise ModelLoadError(f"split GGUF {firsts[0]!r} is missing parts: {', '.join(missing)}")
    return parts


def _group(filename: str) -> str:
    match = _SPLIT.match(filename)
    return filename if match is None else f"{match['stem']}-of-{match['total']}"


def download(repo_id: str, filename: str, *, additional_files: Sequence[str] | None = None,
             local_dir: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
             revision: str | None = None, endpoint: str | None = None,
             token: str | bool | None = None) -> list[Path]:
    """Fetch the GGUF ``filename`` matches (all parts of a split one) and ``additional_files``;
    return their local paths, the model's first. A progress bar is drawn only where a person
    is watching (a terminal or a notebook, through ``tqdm.auto``)."""
    try:
        from huggingface_hub import HfApi, hf_hub_download
    except ImportError:  # pragma: no cover - a declared dependency
        raise ModelLoadError("downloading needs huggingface_hub (pip install huggingface-hub)") from None
    if not isinstance(repo_id, str) or repo_id.count("/") != 1:
        raise ValidationError("repo_id must look like 'owner/name'", param="repo_id")
    if not isinstance(filename, str) or not filename:
        raise ValidationError("filename (a glob such as '*Q4_K_M.gguf') is required", param="filename")
    available = HfApi(endpoint=endpoint, token=token).list_repo_files(repo_id, revision=revision)
    wanted = resolve_files(available, filename)
    for pattern in additional_files or ():
        wanted += [f for f in resolve_files(available, pattern, param="additional_files") if f not in wanted]
    progress = _progress_kwargs(hf_hub_download)
    return [Path(hf_hub_download(repo_id, name, revision=revision, cache_dir=cache_dir, local_dir=local_dir,
                                 endpoint=endpoint, token=token, **progress)) for name in wanted]


def _progress_kwargs(hf_hub_download) -> dict[str, Any]:
    """``tqdm_class`` for hf_hub_download (huggingface-hub >= 0.25): tqdm.auto where a person
    watches, a disabled bar elsewhere, so scripts and CI logs stay clean."""
    if "tqdm_class" not in inspect.signature(hf_hub_download).parameters:
        return {}
    base, quiet = tqdm_class(), False
    if base is None:
        try:
            from tqdm import tqdm as base
        except ImportError:  # pragma: no cover - huggingface_hub depends on tqdm
            return {}
        quiet = True

    class _Bar(base):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.pop("name", None)  # some huggingface_hub versions pass their own bar's name=
            if quiet:
                kwargs["disable"] = True
            super().__init__(*args, **kwargs)
    return {"tqdm_class": _Bar}


def from_pretrained(cls, repo_id: str, filename: str | None, *, additional_files: Sequence[str] | None = None,
                    local_dir: str | os.PathLike | None = None, local_dir_use_symlinks: Any = "auto",
                    cache_dir: str | os.PathLike | None = None, revision: str | None = None,
                    endpoint: str | None = None, token: str | bool | None = None, **kwargs: Any):
    """Download and load; ``kwargs`` go to ``Llama(...)``. ``mmproj``: the projector's file
    name (a glob) in the same repository, fetched too. ``local_dir_use_symlinks`` is
    accepted for llama-cpp-python compatibility (recent hub versions ignore it)."""
    hub = {"local_dir": local_dir, "cache_dir": cache_dir, "revision": revision, "endpoint": endpoint, "token": token}
    paths = download(repo_id, filename, additional_files=additional_files, **hub)
    mmproj = kwargs.get("mmproj")
    if mmproj is not None:
        if not isinstance(mmproj, str):
            raise ValidationError("mmproj must be a file name (or glob) in the repository", param="mmproj")
        kwargs["mmproj"] = str(download(repo_id, mmproj, **hub)[0])
    return cls(model_path=str(paths[0]), **kwargs)
