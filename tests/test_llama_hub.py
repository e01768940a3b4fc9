"""Llama.from_pretrained against a local stand-in for the Hugging Face hub.

A tiny HTTP server in this process answers the two hub endpoints hf_hub_download needs
(the repository tree and ``resolve``); the hub itself is never contacted.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

pytest.importorskip("huggingface_hub")

from llama_ffi import Llama, ModelLoadError, ValidationError  # noqa: E402
from llama_ffi.llama.hub import from_pretrained, resolve_files, split_parts  # noqa: E402

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class _Hub(BaseHTTPRequestHandler):
    repos: dict[str, dict[str, Path]] = {}
    log: list[str] = []

    def log_message(self, *args):  # quiet
        pass

    def _file(self):
        path = unquote(urlparse(self.path).path)
        for repo, files in self.repos.items():
            prefix = f"/{repo}/resolve/"
            if path.startswith(prefix):
                name = path[len(prefix):].split("/", 1)[1]
                return files.get(name)
        return None

    def _send_file_headers(self, file: Path):
        data_len = file.stat().st_size
        self.send_response(200)
        self.send_header("Content-Length", str(data_len))
        self.send_header("ETag", f'"{hashlib.sha1(file.name.encode()).hexdigest()}"')
        self.send_header("X-Repo-Commit", COMMIT)
        self.end_headers()

    def do_HEAD(self):  # noqa: N802
        self.log.append("HEAD " + self.path)
        file = self._file()
        if file is None:
            self.send_error(404)
            return
        self._send_file_headers(file)

    def do_GET(self):  # noqa: N802
        self.log.append("GET " + self.path)
        path = unquote(urlparse(self.path).path)
        for repo, files in self.repos.items():
            if path.startswith(f"/api/models/{repo}"):
                body = json.dumps([{"type": "file", "path": n, "size": f.stat().st_size,
                                    "oid": hashlib.sha1(n.encode()).hexdigest()} for n, f in files.items()])
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())
                return
        file = self._file()
        if file is None:
            self.send_error(404)
            return
        self._send_file_headers(file)
        with open(file, "rb") as handle:
            while chunk := handle.read(1 << 20):
                self.wfile.write(chunk)


@pytest.fixture(scope="module")
def hub(tmp_path_factory, model_path):
    parts_dir = tmp_path_factory.mktemp("parts")
    parts = {}
    for i in (1, 2, 3):
        name = f"tiny-Q4_0-{i:05d}-of-00003.gguf"
        (parts_dir / name).write_bytes(b"GGUF" + bytes([i]) * 100)
        parts[name] = parts_dir / name
    _Hub.repos = {
        "test-org/smol-GGUF": {"smol-Q4_1.gguf": Path(model_path), "README.md": Path(__file__)},
        "test-org/split-GGUF": {**parts, "README.md": Path(__file__)},
    }
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_from_pretrained_glob_downloads_and_loads(hub, tmp_path):
    with Llama.from_pretrained("test-org/smol-GGUF", "*Q4_1.gguf", endpoint=hub, cache_dir=tmp_path,
                               n_ctx=128, verbose=False) as llm:
        assert Path(llm.model_path).name == "smol-Q4_1.gguf" and str(tmp_path) in llm.model_path
        assert llm.generate_text("Hi", max_tokens=2, temperature=0)
    assert any("resolve" in line for line in _Hub.log)


def test_split_gguf_fetches_every_part(hub, tmp_path):
    loaded = {}

    class Recorder:
        def __init__(self, model_path, **kwargs):
            loaded["path"], loaded["kwargs"] = model_path, kwargs

    from_pretrained(Recorder, "test-org/split-GGUF", "*Q4_0*.gguf", endpoint=hub, local_dir=tmp_path, n_ctx=64)
    assert Path(loaded["path"]).name == "tiny-Q4_0-00001-of-00003.gguf" and loaded["kwargs"] == {"n_ctx": 64}
    assert sorted(p.name for p in tmp_path.glob("*.gguf")) == [f"tiny-Q4_0-{i:05d}-of-00003.gguf" for i in (1, 2, 3)]
    assert (tmp_path / "tiny-Q4_0-00002-of-00003.gguf").read_bytes()[4] == 2


def test_no_match_and_bad_repo(hub, tmp_path):
    with pytest.raises(ValidationError, match="no file matches"):
        Llama.from_pretrained("test-org/smol-GGUF", "*Q8_0.gguf", endpoint=hub, cache_dir=tmp_path)
    with pytest.raises(ValidationError):
        Llama.from_pretrained("not-a-repo-id", "*.gguf", endpoint=hub)


def test_resolve_files_rules():
    files = ["a-Q4.gguf", "a-Q8.gguf", "b-00001-of-00002.gguf", "b-00002-of-00002.gguf", "c-00001-of-00002.gguf"]
    assert resolve_files(files, "a-Q4.gguf") == ["a-Q4.gguf"]
    assert resolve_files(files, "b-*.gguf") == ["b-00001-of-00002.gguf", "b-00002-of-00002.gguf"]
    assert resolve_files(files, "b-00002-of-00002.gguf") == ["b-00001-of-00002.gguf", "b-00002-of-00002.gguf"]
    with pytest.raises(ValidationError, match="multiple"):
        resolve_files(files, "a-*.gguf")
    with pytest.raises(ModelLoadError, match="missing parts"):
        resolve_files(files, "c-*.gguf")
    assert split_parts("x.gguf") == ["x.gguf"]
    assert split_parts("m-00003-of-00003.gguf")[0] == "m-00001-of-00003.gguf"
