#!/usr/bin/env bash
# Runs on the GPU machine, in the repository root: scripts/gpu/run.sh STAGE [ARG]
#
# Stages, in order (each well under 10 minutes; logs and results go to $OUT):
#   setup          install .gpu/whl into /tmp/site, unpack .gpu/src, build libllama + CUDA
#                  + all native tools (carry .gpu/src and .gpu/whl)
#   model          collect the model part(s) carried in .gpu/modelN (one per call), and once
#                  all are in, reassemble models/<name> and check its sha256
#   test           GPU test subset: pytest -m gpu, the native tests, and a smoke check that
#                  n_gpu_layers=-1 loads, offloads and generates like the CPU does
#   bench [WHICH]  the harness with --n-gpu-layers 99: WHICH = smollm2 (default), 8b, or all
#                  (all may not fit in one 10-minute call)
#   make8b         write the random-weight Llama-3-8B-shaped Q4_K_M (speed only)
#
# State that later stages use lives in /tmp (while the machine stays warm) and in the
# repository's ignored folders (vendor/, models/, build/): a fresh machine needs setup again.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
SITE=/tmp/site
SRC=/tmp/llama.cpp-0c1e57098   # outside the repository, so git does not answer for it
export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
export BENCH_LLAMA_CPP_PYTHON=/tmp/llama_cpp_python.tar.gz
PY=${PY:-python3}
SMOL=models/SmolLM2-135M-Instruct.Q4_1.gguf
BIG=models/llama3-8b-shapes-random.Q4_K_M.gguf

log() { echo "[run.sh $(date +%H:%M:%S)] $*"; }

ensure_site() {
  if ! $PY -c "import cffi, diskcache, fastapi, uvicorn" 2>/dev/null; then
    [ -d .gpu/whl ] || { log "cffi missing and no .gpu/whl here: run the setup stage (carry .gpu/whl)"; return 1; }
    $PY -m pip install -q --no-index --find-links .gpu/whl --target "$SITE" cffi pycparser diskcache \
      typing-extensions fastapi uvicorn
  fi
  [ -f "$BENCH_LLAMA_CPP_PYTHON" ] || { [ -f .gpu/src/llama_cpp_python.tar.gz ] && cp .gpu/src/llama_cpp_python.tar.gz "$BENCH_LLAMA_CPP_PYTHON"; }
  return 0
}

stage_setup() {
  ensure_site || return 1
  log "python: $($PY --version); $($PY -m pip list 2>/dev/null | grep -iE '^(cffi|numpy|jinja2|pytest|pyyaml) ' | tr -s ' ' | tr '\n' ';')"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  rm -rf "$SRC" && mkdir -p "$SRC" && tar -C "$SRC" -xzf .gpu/src/llama.cpp.tar.gz
  cp .gpu/src/llama_cpp_python.tar.gz "$BENCH_LLAMA_CPP_PYTHON"
  log "building (CUDA arch ${CUDA_ARCH:-90}, $(nproc) jobs)"
  LLAMA_FFI_PINNED_COMMIT=0c1e57098 $PY scripts/build_libllama.py --source-dir "$SRC" --cuda \
    --cuda-arch "${CUDA_ARCH:-90}" --tools all --jobs "$(nproc)" \
    --cmake-arg="-DGIT_EXE=$PWD/scripts/pinned_git.sh" || return 1
  # Workaround: build_libllama.py copies libllama*.so and libggml*.so only, while the tools also
  # link libllama-<tool>-impl.so and libllama-common.so (from the same build folder).
  cp -P "${LLAMA_FFI_CACHE:-$HOME/.cache/llama_ffi}"/build/*/bin/libllama-*.so* vendor/lib/ 2>/dev/null
  ls -la vendor/lib vendor/bin
  $PY -c "import llama_ffi; print(llama_ffi.system_info()); print(llama_ffi.devices())"
}

stage_model() {
  mkdir -p models/.parts
  for d in .gpu/model*/; do
    [ -f "$d/MANIFEST" ] || continue
    cp "$d/MANIFEST" models/.parts/MANIFEST
    cp "$d"/part.* models/.parts/ && log "took $(ls "$d" | grep part | tr '\n' ' ')from $d"
  done
  [ -f models/.parts/MANIFEST ] || { log "no .gpu/modelN carried"; return 1; }
  name=$(awk '$1=="name"{print $2}' models/.parts/MANIFEST)
  want=$(awk '$1=="sha256"{print $2}' models/.parts/MANIFEST)
  n=$(awk '$1=="parts"{print $2}' models/.parts/MANIFEST)
  have=0
  while read -r _ part sum; do
    if [ -f "models/.parts/$part" ]; then
      [ "$(sha256sum "models/.parts/$part" | cut -d' ' -f1)" = "$sum" ] || { log "$part corrupt"; rm "models/.parts/$part"; continue; }
      have=$((have + 1))
    fi
  done < <(grep '^part ' models/.parts/MANIFEST)
  log "$name: $have of $n parts here"
  [ "$have" = "$n" ] || return 0
  cat $(grep '^part ' models/.parts/MANIFEST | awk '{print "models/.parts/"$2}') > "models/$name.tmp"
  got=$(sha256sum "models/$name.tmp" | cut -d' ' -f1)
  if [ "$got" = "$want" ]; then
    mv "models/$name.tmp" "models/$name" && rm -rf models/.parts && log "models/$name ok (sha256 $got)"
  else
    rm "models/$name.tmp"; log "sha256 mismatch for $name: $got != $want"; return 1
  fi
}

gpu_smoke() {
  # The native fixtures load on the CPU (n_gpu_layers=0); this checks the offloaded path.
  $PY - <<'EOF'
from llama_ffi import Context, ContextParams, Model, Sampler, SamplerChain, devices
from llama_ffi.native.loop import TokenLoop

print("devices:", devices())
def greedy(ngl):
    with Model.load("models/SmolLM2-135M-Instruct.Q4_1.gguf", n_gpu_layers=ngl) as m, \
            Context(m, ContextParams(n_ctx=512)) as ctx, SamplerChain([Sampler.greedy()]) as chain:
        loop = TokenLoop(ctx, chain)
        loop.prefill(m.vocab.tokenize("The capital of France is"))
        return list(loop.run(32))
gpu, cpu = greedy(-1), greedy(0)
same = next((i for i, (a, b) in enumerate(zip(gpu, cpu)) if a != b), len(gpu))
print(f"n_gpu_layers=-1 generated {len(gpu)} tokens; first {same} equal to the CPU's")
assert len(gpu) == 32 and same >= 4, "GPU greedy output diverges from the CPU's at once"
EOF
}

stage_test() {
  ensure_site || return 1
  local rc=0
  $PY -m pytest -q -p no:cacheprovider -m gpu tests/ --continue-on-collection-errors > "$OUT/test-gpu-marked.log" 2>&1
  r=$?; [ $r = 5 ] && log "no tests marked gpu" || { [ $r = 0 ] || rc=1; }
  $PY -m pytest -q -p no:cacheprovider tests/test_native_*.py tests/test_bench_harness.py > "$OUT/test-native.log" 2>&1 || rc=1
  gpu_smoke > "$OUT/test-gpu-smoke.log" 2>&1 || rc=1
  tail -n 3 "$OUT"/test-*.log
  return $rc
}

bench_one() {  # bench_one LABEL MODEL
  [ -f "$2" ] || { log "no $2: skipped (run the model or make8b stage)"; return 0; }
  log "bench $1 on $2"
  $PY -m scripts.bench --model "$2" --n-gpu-layers 99 --repeat "${REPEAT:-3}" --out "$OUT/bench-$1" \
    > "$OUT/bench-$1.log" 2>&1
  local r=$?
  tail -n 40 "$OUT/bench-$1.log"
  return $r
}

stage_bench() {
  ensure_site || return 1
  case "${1:-smollm2}" in
    smollm2) bench_one smollm2 "$SMOL" ;;
    8b) bench_one 8b "$BIG" ;;
    all) bench_one smollm2 "$SMOL" && bench_one 8b "$BIG" ;;
    *) log "bench: unknown model set $1"; return 2 ;;
  esac
}

stage_make8b() {
  $PY -c "import numpy, yaml" || { log "gguf-py needs numpy and pyyaml"; return 1; }
  [ -x vendor/bin/llama-quantize ] || { log "llama-quantize missing: run setup"; return 1; }
  df -h models . | tail -1
  $PY scripts/make_8b_model.py --threads "$(nproc)"
  ls -la models
}

stage=${1:-}
shift || true
case "$stage" in
  setup|model|test|bench|make8b)
    { "stage_$stage" "$@"; echo $? > "$OUT/.rc"; } 2>&1 | tee "$OUT/$stage.log"
    rc=$(cat "$OUT/.rc"); rm -f "$OUT/.rc"
    log "stage $stage finished with status $rc" | tee -a "$OUT/$stage.log"
    exit "$rc" ;;
  *) echo "usage: $0 setup|model|test|bench [smollm2|8b|all]|make8b" >&2; exit 2 ;;
esac
