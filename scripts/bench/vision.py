"""Image prompts: encode time, time to first token and decode tokens/s, against llama-server's
multimodal path and llama-cpp-python's ``Llava15ChatHandler``: one model, projector and image.

    python -m scripts.bench.vision --model M.gguf --mmproj P.gguf --n-gpu-layers -1

Every peer answers the same chat request, streamed: one PNG (``--image WxH``, seeded noise) and
"Describe this image.", ``--n-gen`` tokens, greedy, end-of-generation tokens banned so each
answer has exactly that many tokens. TTFT is request to first text (image decode, encode and
prompt); decode t/s is the tokens after the first over the time after it. Each cell is the best
of ``--repeat`` requests after one warm-up, each request encoding the image again (no prompt
reuse: a new image each time, ``cache_prompt: false`` for llama-server). "encode ms" is the image
encode alone: ours timed around ``MtmdContext.encode``, llama-server's from its "slice encoded
in" log line; the same libmtmd does the work in every peer.

``--mixed N``: instead, what an image request does to N text streams already running in one
``Engine``: their median and longest gap between tokens with no image, and the longest gap
while one image request is admitted (the engine evaluates its media in one call, so the
streams wait for that encode and decode), with that request's time to first token.

Peers: ``ours`` (``Llama(mmproj=...)`` in a child), ``ours-server`` (``python -m llama_ffi.server
--mmproj``), ``llama-server`` and ``llama-server-bs`` (with ``--backend-sampling``), and
``llama-cpp-python`` (its package over our libllama and libmtmd, see lcpp.py). A peer that
fails prints why and the others still run.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

from . import lcpp, proc
from .env import REPO, VENDOR_BIN, VENDOR_LIB, device
from .serving import _free_port, _wait_healthy, stop

PROMPT = "Describe this image."
PEERS = ("ours", "ours-server", "llama-server", "llama-server-bs", "llama-cpp-python")


def png_bytes(width: int, height: int, seed: int = 0) -> bytes:
    """A seeded RGB noise PNG (zlib + struct: no Pillow on the GPU machine)."""
    import numpy as np

    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    raw = b"".join(b"\x00" + pixels[y].tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


_images = iter(range(1, 1 << 30))


def fresh_image(size) -> bytes:
    """A new image for every request: no peer may reuse the last one's cells (ours and
    llama-server both keep an identical image's KV cells)."""
    return png_bytes(*size, seed=next(_images))


def messages(image: bytes) -> list[dict]:
    uri = "data:image/png;base64," + base64.b64encode(image).decode()
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": uri}},
                                         {"type": "text", "text": PROMPT}]}]


def best(runs: list[dict]) -> dict:
    return {"ttft_s": min(r["ttft_s"] for r in runs), "decode_tps": max(r["decode_tps"] for r in runs),
            "tokens": runs[-1]["tokens"], "prompt_tokens": runs[-1].get("prompt_tokens")}


def timed_stream(chunks, start: float) -> dict:
    """TTFT and decode rate of a stream of OpenAI chat chunks (dicts)."""
    first = last = None
    n = 0
    prompt_tokens = None
    for c in chunks:
        if c.get("usage"):
            prompt_tokens = c["usage"].get("prompt_tokens")
        choices = c.get("choices") or []
        if choices and (choices[0].get("delta") or {}).get("content"):
            now = time.perf_counter()
            first = first if first is not None else now
            last, n = now, n + 1
    if first is None:
        raise RuntimeError("no text came back")
    return {"ttft_s": first - start, "decode_tps": (n - 1) / (last - first) if n > 1 and last > first else 0.0,
            "tokens": n, "prompt_tokens": prompt_tokens}


# --- children: one process each, the parent never loads libllama -----------------------------
def child_ours(p: dict) -> dict:
    from llama_ffi import Llama

    image = png_bytes(*p["image"])
    with Llama(p["model"], mmproj=p["mmproj"], n_ctx=p["n_ctx"], n_gpu_layers=p["n_gpu_layers"], verbose=False,
               chat_format=p.get("chat_format")) as llm:
        ban = {str(t): -100.0 for t in llm._model.vocab.eog_tokens}

        def one(n_gen: int) -> dict:
            llm.reset()
            start = time.perf_counter()
            stream = llm.create_chat_completion(messages(fresh_image(p["image"])), max_tokens=n_gen, temperature=0.0,
                                                stream=True,
                                                logit_bias=ban)
            return timed_stream(stream, start)

        one(8)
        runs = [one(p["n_gen"]) for _ in range(p["repeat"])]
        llm.reset()
        runs[-1]["prompt_tokens"] = llm.create_chat_completion(messages(image), max_tokens=1)["usage"]["prompt_tokens"]
        mtmd = llm.mtmd
        chunks = mtmd.tokenize(f"{mtmd.marker}", [mtmd.bitmap_from_bytes(image)])
        index = next(i for i, c in enumerate(chunks) if c.type != "text")
        encode = []
        for _ in range(5):
            t0 = time.perf_counter()
            mtmd.encode(chunks, index)
            encode.append(time.perf_counter() - t0)
        n_image = chunks[index].n_tokens
        chunks.close()
    result = best(runs)
    result.update(encode_ms=1000 * sorted(encode)[len(encode) // 2], image_tokens=n_image)
    return result


def child_lcpp(p: dict) -> dict:
    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import Llava15ChatHandler

    image = png_bytes(*p["image"])
    handler = Llava15ChatHandler(clip_model_path=p["mmproj"], verbose=False)
    llm = Llama(model_path=p["model"], chat_handler=handler, n_ctx=p["n_ctx"], n_gpu_layers=p["n_gpu_layers"],
                verbose=False)
    eog = [t for t in range(llm.n_vocab()) if llm._model.token_is_eog(t)] if hasattr(llm._model, "token_is_eog") \
        else [llm.token_eos()]
    ban = {str(t): -100.0 for t in eog}

    def one(n_gen: int) -> dict:
        llm.reset()
        start = time.perf_counter()
        stream = llm.create_chat_completion(messages(fresh_image(p["image"])), max_tokens=n_gen, temperature=0.0,
                                            repeat_penalty=1.0,
                                            stream=True, logit_bias=ban)
        return timed_stream(stream, start)

    one(8)
    result = best([one(p["n_gen"]) for _ in range(p["repeat"])])
    llm.reset()
    result["prompt_tokens"] = llm.create_chat_completion(messages(image), max_tokens=1)["usage"]["prompt_tokens"]
    return result


def child_mixed(p: dict) -> dict:
    import statistics
    import threading

    from llama_ffi.chat.media import MediaInput
    from llama_ffi.engine import Engine
    from llama_ffi.generation.sampling import SamplingParams
    from llama_ffi.llama.vision import media_prompt

    n_text, n_gen = p["mixed"], p["n_gen"]
    with Engine(p["model"], n_ctx=(n_text + 1) * (n_gen + 1024), n_seq_max=n_text + 1,
                n_gpu_layers=p["n_gpu_layers"], mmproj=p["mmproj"]) as eng:
        greedy = SamplingParams(temperature=0.0, logit_bias={t: -100.0 for t in eng.model.vocab.eog_tokens})

        def image_request(sink):
            text = f"<|im_start|>user\n{eng.mtmd.marker}\n{PROMPT}<|im_end|>\n<|im_start|>assistant\n"
            with eng.media_lock:
                media = media_prompt(eng.mtmd, eng.model.vocab, text,
                                     [MediaInput("image", fresh_image(p["image"]), "bench")], add_bos=True)
            return eng.submit("", media=media, sampling=greedy, max_tokens=8, sink=sink)

        def wave(with_image: bool) -> dict:
            stamps: list[list[float]] = [[] for _ in range(n_text)]
            done = threading.Semaphore(0)
            image_times: dict[str, float] = {}

            def text_sink(i):
                def sink(event):
                    if event.tokens:
                        stamps[i].append(time.perf_counter())
                    if event.finish_reason:
                        done.release()
                return sink

            def image_sink(event):
                if event.tokens and "first" not in image_times:
                    image_times["first"] = time.perf_counter()
                if event.finish_reason:
                    done.release()

            for i in range(n_text):
                eng.submit("Write a long story about a robot who learns to paint.", sampling=greedy,
                           max_tokens=n_gen, sink=text_sink(i))
            if with_image:
                while min(len(s) for s in stamps) < n_gen // 4:  # all streams decoding
                    time.sleep(0.001)
                image_times["submit"] = time.perf_counter()
                image_request(image_sink)
            for _ in range(n_text + with_image):
                done.acquire()
            gaps = [b - a for s in stamps for a, b in zip(s, s[1:])]
            out = {"p50_gap_ms": 1000 * statistics.median(gaps), "max_gap_ms": 1000 * max(gaps)}
            if with_image:
                start, first = image_times["submit"], image_times["first"]
                during = [b - a for s in stamps for a, b in zip(s, s[1:]) if b >= start and a <= first]
                out.update(max_gap_during_image_ms=1000 * max(during, default=0.0), image_ttft_ms=1000 * (first - start))
            return out

        wave(True)  # warm-up
        plain = min((wave(False) for _ in range(p["repeat"])), key=lambda r: r["max_gap_ms"])
        mixed = min((wave(True) for _ in range(p["repeat"])), key=lambda r: r["max_gap_during_image_ms"])
        return {"plain": plain, "mixed": mixed}


def run_child(kind: str, p: dict, env: dict | None = None) -> dict:
    done = proc.run([sys.executable, "-m", "scripts.bench.vision", "--child", kind, json.dumps(p)], env=env,
                    timeout=900)
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(proc.MARKER) and done.returncode == 0:
            return json.loads(line[len(proc.MARKER):])
    raise proc.WorkerError(f"{kind}: {done.describe()}")


# --- servers: the same request over HTTP -----------------------------------------------------
def server_command(peer: str, p: dict, port: int) -> list[str]:
    common = ["-m", p["model"], "--mmproj", p["mmproj"], "--port", str(port), "-c", str(p["n_ctx"]), "-np", "1",
              "-ngl", str(p["n_gpu_layers"])]
    if peer == "ours-server":
        return [sys.executable, "-m", "llama_ffi.server", *common, "-a", "m",
                *(["--chat-format", p["chat_format"]] if p.get("chat_format") else [])]
    binary = VENDOR_BIN / "llama-server"
    if not binary.exists():
        raise FileNotFoundError("llama-server not built (scripts/build_libllama.py --tools all)")
    return [str(binary), *common, "--host", "127.0.0.1", "--no-webui", "-fa", "on",
            *(["--chat-template", p["chat_format"]] if p.get("chat_format") else []),
            *(["--backend-sampling"] if peer == "llama-server-bs" else [])]


def measure_server(peer: str, p: dict, eog: list[int]) -> dict:
    import httpx

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    body = {"model": "m", "temperature": 0.0, "stream": True,
            "stream_options": {"include_usage": True}, "logit_bias": {str(t): -100 for t in eog},
            "cache_prompt": False}
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen(server_command(peer, p, port), cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL)
        try:
            _wait_healthy(url, server, timeout=300)

            def one(n_gen: int) -> dict:
                start = time.perf_counter()
                request = {**body, "messages": messages(fresh_image(p["image"])), "max_tokens": n_gen}
                with httpx.stream("POST", url + "/v1/chat/completions", json=request, timeout=600) as response:
                    if response.status_code != 200:
                        raise RuntimeError(f"HTTP {response.status_code}: {response.read()[:300]!r}")
                    lines = (json.loads(x[6:]) for x in response.iter_lines()
                             if x.startswith("data: ") and x != "data: [DONE]")
                    return timed_stream(lines, start)

            one(8)
            result = best([one(p["n_gen"]) for _ in range(p["repeat"])])
        finally:
            stop(server)
        log.seek(0)
        encoded = [int(m) for m in re.findall(rb"slice encoded in (\d+) ms", log.read())]
    if encoded:
        result["encode_ms"] = sorted(encoded)[len(encoded) // 2]
    return result


def eog_tokens(model: str) -> list[int]:
    done = proc.run([sys.executable, "-c", "import sys, json; from llama_ffi import Model; "
                     "m = Model.load(sys.argv[1], n_gpu_layers=0, vocab_only=True); "
                     "print(json.dumps(sorted(m.vocab.eog_tokens)))", model])
    if done.returncode:
        raise proc.WorkerError(f"reading the vocabulary: {done.describe()}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def mixed_rows(p: dict) -> int:
    r = run_child("mixed", p)
    if "error" in r:
        print(f"mixed: failed: {r['error']}")
        return 1
    plain, mixed = r["plain"], r["mixed"]
    print(f"model: {p['model']}  mmproj: {p['mmproj']}  image: {p['image'][0]}x{p['image'][1]} PNG  "
          f"{p['mixed']} text streams x {p['n_gen']} tokens, one Engine, n_gpu_layers: {p['n_gpu_layers']}  "
          f"best of {p['repeat']}\ndevice: {device(p['n_gpu_layers'])}\n")
    print("| text streams | median gap ms | longest gap ms | longest gap while an image is admitted, ms "
          "| image request TTFT ms |")
    print("|---:|---:|---:|---:|---:|")
    print(f"| {p['mixed']} | {plain['p50_gap_ms']:.1f} | {plain['max_gap_ms']:.1f} | "
          f"{mixed['max_gap_during_image_ms']:.1f} | {mixed['image_ttft_ms']:.1f} |")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model")
    ap.add_argument("--mmproj")
    ap.add_argument("--image", default="640x480", help="WIDTHxHEIGHT of the test PNG")
    ap.add_argument("--n-gen", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--n-gpu-layers", type=int, default=0)
    ap.add_argument("--n-ctx", type=int, default=4096)
    ap.add_argument("--chat-format", help="e.g. chatml, for a model without a chat template")
    ap.add_argument("--peers", default=",".join(PEERS))
    ap.add_argument("--mixed", type=int, help="N text streams in one Engine, then one image request among them")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args, rest = ap.parse_known_args(argv)
    if args.child:
        params = json.loads(rest[0])
        try:
            result = {"ours": child_ours, "lcpp": child_lcpp, "mixed": child_mixed}[args.child](params)
        except Exception as exc:  # the parent prints it in the peer's row
            result = {"error": f"{type(exc).__name__}: {exc}"}
        proc.emit(result)
        return 0
    if not (args.model and args.mmproj):
        ap.error("--model and --mmproj are required")
    width, height = (int(x) for x in args.image.lower().split("x"))
    p = {"model": str(Path(args.model).resolve()), "mmproj": str(Path(args.mmproj).resolve()),
         "image": [width, height], "n_gen": args.n_gen, "repeat": args.repeat, "n_gpu_layers": args.n_gpu_layers,
         "n_ctx": args.n_ctx, "chat_format": args.chat_format}
    if args.mixed:
        return mixed_rows({**p, "mixed": args.mixed})
    eog = eog_tokens(p["model"])
    print(f"model: {args.model}  mmproj: {args.mmproj}  image: {width}x{height} PNG  n_gen: {args.n_gen}  "
          f"n_gpu_layers: {args.n_gpu_layers}  best of {args.repeat}\ndevice: {device(args.n_gpu_layers)}\n")
    print("| peer | image tokens | prompt tokens | encode ms | TTFT ms | decode t/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for peer in [x for x in args.peers.split(",") if x]:
        try:
            if peer == "ours":
                r = run_child("ours", p)
            elif peer == "llama-cpp-python":
                env, why = lcpp.prepare(Path(tempfile.mkdtemp(prefix="bench-lcpp-")))
                if env is None:
                    raise RuntimeError(why)
                env["MTMD_CPP_LIB"] = str(VENDOR_LIB)
                env["PYTHONPATH"] = f"{REPO}:{env.get('PYTHONPATH', '')}"
                r = run_child("lcpp", p, env)
            else:
                r = measure_server(peer, p, eog)
            if "error" in r:
                raise RuntimeError(r["error"])
        except Exception as exc:
            print(f"| {peer} | failed: {type(exc).__name__}: {str(exc)[-300:]} | | | | |", flush=True)
            continue

        def cell(key: str, fmt: str) -> str:
            return format(r[key], fmt) if r.get(key) is not None else "-"

        print(f"| {peer} | {cell('image_tokens', 'd')} | {cell('prompt_tokens', 'd')} | {cell('encode_ms', '.1f')} "
              f"| {1000 * r['ttft_s']:.1f} | {r['decode_tps']:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
