"""The benchmark harness's pure parts (stats, rendering, command line) and the 8B-shaped model
writer at a tiny size. No timing is asserted: these machines are shared and noisy."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from scripts.bench import cli, report  # noqa: E402
from scripts.bench.stats import Result, ratio, skipped, summarize  # noqa: E402


def result(key, samples, *, unit="t/s", baseline=None, name=None, status="ok"):
    return Result(key=key, workload="tg", name=name or key, unit=unit, higher_is_better=unit == "t/s",
                  samples=samples, baseline=baseline, status=status)


def test_summarize_median_and_spread():
    s = summarize([3.0, 1.0, 2.0, 10.0])
    assert (s.median, s.low, s.high, s.n) == (2.5, 1.0, 10.0, 4)
    assert s.spread == pytest.approx(9.0 / 2.5)
    assert summarize([5.0]).spread == 0.0
    with pytest.raises(ValueError):
        summarize([])


def test_ratio_is_above_one_when_ours_is_better_in_either_direction():
    fast, slow = result("a", [200.0]), result("b", [100.0])
    assert ratio(fast, slow) == pytest.approx(2.0)
    quick, sluggish = result("c", [0.5], unit="s"), result("d", [1.0], unit="s")
    assert ratio(quick, sluggish) == pytest.approx(2.0)
    small, big = result("e", [50.0], unit="MiB"), result("f", [200.0], unit="MiB")
    assert ratio(small, big) == pytest.approx(4.0)


def test_ratio_without_figures_is_none():
    base = result("b", [100.0])
    assert ratio(skipped("a", "tg", "x", "t/s", "not implemented yet"), base) is None
    assert ratio(base, result("z", [], status="error")) is None


def test_table_has_one_row_per_result_and_names_the_baseline():
    rows = [result("tg/ours", [110.0, 100.0, 90.0], baseline="tg/base", name="ours | loop"),
            result("tg/base", [50.0, 50.0], name="llama-bench"),
            skipped("tg/later", "tg", "engine", "t/s", "not implemented yet")]
    table = report.render_table(rows)
    lines = table.splitlines()
    assert len(lines) == 2 + len(rows)
    assert "2.00x llama-bench" in lines[2]
    assert "90.0-110" in lines[2] and "| 3 |" in lines[2]
    assert "ours \\| loop" in lines[2]  # a pipe in a name does not break the table
    assert "skipped" in lines[4] and "not implemented yet" in lines[4]


def test_markdown_and_json_carry_the_meta():
    meta = {"date": "2026-11-21 00:00 UTC", "device": "CPU Test", "model": "m.gguf", "model_size_mib": 1.0,
            "build": {"llama_cpp_commit": "abc", "cuda": False, "flags": ["-DX=1"]}, "threads": 2,
            "n_gpu_layers": 0, "flash_attn": True, "repeat": 3, "quick": True, "command": "python -m scripts.bench"}
    rows = [result("a", [2.0, 4.0], baseline="b"), result("b", [1.0])]
    md = report.render_markdown(meta, rows)
    assert "CPU Test" in md and "-DX=1" in md and "QUICK" in md and "tokens per second" in md
    data = json.loads(report.to_json(meta, rows))
    assert data["meta"]["device"] == "CPU Test"
    first = data["results"][0]
    assert (first["median"], first["min"], first["max"]) == (3.0, 2.0, 4.0)
    assert first["ratio_to_baseline"] == pytest.approx(3.0)
    assert data["results"][1]["ratio_to_baseline"] is None


def test_value_formatting():
    assert report.fmt(0.51234, "s") == "0.512"
    assert report.fmt(857.4, "t/s") == "857"
    assert report.fmt(19.66, "t/s") == "19.7"
    assert report.fmt(1.234, "MiB") == "1.23"


def test_command_line():
    args = cli.parse_args(["--quick", "--workloads", "tg,rss", "--n-gpu-layers", "99"])
    assert args.quick and args.workloads == "tg,rss" and args.n_gpu_layers == 99
    with pytest.raises(SystemExit):
        cli.parse_args(["--workloads", "tg,nonsense"])


# --- the 8B-shaped model writer ------------------------------------------------------------

def _make_8b():
    vocab = REPO / "vendor" / "llama.cpp" / "models" / "ggml-vocab-llama-bpe.gguf"
    if not vocab.exists():
        pytest.skip("pinned llama.cpp tree missing: run scripts/build_libllama.py")
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import make_8b_model
    finally:
        sys.path.remove(str(REPO / "scripts"))
    return make_8b_model


def test_8b_plan_has_llama3_8b_parameter_count():
    m = _make_8b()
    n = sum(int(__import__("numpy").prod(shape)) for _, shape, _ in m.tensor_plan(m.LLAMA3_8B, 128256))
    assert n == 8_030_261_248  # Llama-3-8B's published parameter count


@pytest.mark.slow
def test_tiny_random_model_loads_and_generates(tmp_path):
    m = _make_8b()
    from llama_ffi import Context, ContextParams, Model, Sampler, SamplerChain
    from llama_ffi.native.loop import TokenLoop

    path = tmp_path / "tiny.gguf"
    assert m.main(["--tiny", "--out", str(path)]) == 0
    with Model.load(path, n_gpu_layers=0) as model:
        assert len(model.vocab) == 128256 and model.n_layer == 2
        assert "SPEED ONLY" in model.metadata["general.description"]
        tokens = model.vocab.tokenize("Hello world")
        assert tokens[0] == 128000  # Llama-3's <|begin_of_text|>: the real tokenizer came along
        with Context(model, ContextParams(n_ctx=128, n_batch=128)) as ctx, \
                SamplerChain([Sampler.greedy()]) as chain:
            loop = TokenLoop(ctx, chain)
            loop.prefill(tokens)
            out = list(loop.run(8))
    assert len(out) == 8 and all(0 <= t < 128256 for t in out)


def test_embedding_workload_texts_are_fixed_and_varied():
    from scripts.bench import embeddings

    texts = embeddings.texts()
    assert texts == embeddings.texts() and len(texts) == embeddings.N_TEXTS
    assert len({len(t.split()) for t in texts}) > 20


def test_embedding_workload_skips_without_its_model(monkeypatch, tmp_path):
    from scripts.bench import placeholders

    monkeypatch.setenv("BENCH_EMBEDDING_MODEL", str(tmp_path / "absent.gguf"))
    rows = placeholders.w_embeddings({"threads": 1, "n_gpu_layers": 0, "reps": 1, "lcpp_env": None,
                                      "lcpp_skip": None})
    assert [r.key for r in rows] == ["embeddings/ours", "embeddings/ours-tokens", "embeddings/lcpp",
                                     "embeddings/lcpp-tokens"]
    assert all(r.status == "skipped" and "make_embedding_model" in r.note and r.higher_is_better for r in rows)
    assert rows[0].baseline == "embeddings/lcpp" and rows[0].unit == "texts/s"
