"""scripts/registry.py: the setup's one download path, against a local package index.

A PEP 503 index in a temporary folder stands in for the registry (the deliberate seam: the
tests never reach the network); pip itself is asked which index to use, as in setup.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import registry  # noqa: E402

PAYLOAD = b"pinned bytes " * 1000
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def index(tmp_path, monkeypatch):
    """A one-package index (``some-package``, one file) that pip is configured to use."""
    root = tmp_path / "index"
    files = root / "files"
    files.mkdir(parents=True)
    (files / "some_package-1.0.tar.gz").write_bytes(PAYLOAD)
    page = root / "simple" / "some-package"
    page.mkdir(parents=True)
    (page / "index.html").write_text(
        '<!DOCTYPE html><html><body>\n<a href="../../files/some_package-1.0.tar.gz#sha256='
        f'{DIGEST}">some_package-1.0.tar.gz</a>\n</body></html>\n')
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")  # only what this test sets
    monkeypatch.setenv("PIP_INDEX_URL", (root / "simple").as_uri())
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    return root


def test_pip_sources_follow_pip_config(index):
    indexes, folders = registry.pip_sources()
    assert indexes == [(index / "simple").as_uri()] and folders == []


def test_fetches_checks_and_reuses(index, tmp_path):
    dest = tmp_path / "downloads"
    got = registry.fetch("Some_Package", "some_package-1.0.tar.gz", DIGEST, dest)  # PEP 503 name
    assert got == dest / "some_package-1.0.tar.gz" and got.read_bytes() == PAYLOAD
    (index / "files" / "some_package-1.0.tar.gz").unlink()  # a verified copy is not fetched again
    assert registry.fetch("some-package", "some_package-1.0.tar.gz", DIGEST, dest) == got


def test_a_file_with_another_digest_is_not_kept(index, tmp_path):
    dest = tmp_path / "downloads"
    with pytest.raises(registry.FetchError, match="sha256") as caught:
        registry.fetch("some-package", "some_package-1.0.tar.gz", "0" * 64, dest)
    assert "\n" not in str(caught.value)
    assert not any(dest.iterdir())  # neither the file nor a .part


def test_missing_package_or_file_names_what_was_tried(index, tmp_path):
    for package, filename in (("other-package", "other-1.0.tar.gz"), ("some-package", "some_package-2.0.tar.gz")):
        with pytest.raises(registry.FetchError) as caught:
            registry.fetch(package, filename, DIGEST, tmp_path)
        message = str(caught.value)
        assert filename in message and (index / "simple").as_uri() in message and "\n" not in message


def test_build_script_ends_a_failed_download_with_one_line(index, tmp_path):
    """The setup step a user runs: no traceback, one line naming the file and the fix."""
    env = {"PATH": "/usr/bin:/bin", "PIP_CONFIG_FILE": "/dev/null", "LLAMA_FFI_CACHE": str(tmp_path / "cache"),
           "PIP_INDEX_URL": (index / "simple").as_uri(), "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "build_libllama.py")], env=env,
                          capture_output=True, text=True, cwd=tmp_path)  # fails before vendor/ is touched
    assert done.returncode != 0 and "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("[build_libllama] error:") and "llama_cpp_python-0.3.36.tar.gz" in last
    assert "pip config list" in last
