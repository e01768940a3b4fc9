#!/usr/bin/env bash
# Runs on the GPU machine, in the repository root: scripts/gpu/run.sh STAGE [ARG]
#
# Stages, in order (each well under 10 minutes; logs and results go to $OUT):
#   setup          install .gpu/whl into /tmp/site, unpack .gpu/src, build libllama + CUDA
#                  + all native tools (carry .gpu/src and .gpu/whl)
#   parts          collect the parts of big files carried in .gpu/<name>N (model parts,
#                  nvidia-cublas parts), and once all are in, reassemble and check sha256
#                  (``model`` is the same stage)
#   test           GPU test subset: pytest -m gpu, the native tests, and a smoke check that
#                  n_gpu_layers=-1 loads, offloads and generates like the CPU does
#   bench [WHICH]  the harness with --n-gpu-layers 99: WHICH = smollm2 (default), 8b, or all
#                  (all may not fit in one 10-minute call)
#   make8b         write the random-weight Llama-3-8B-shaped Q4_K_M (speed only)
#   spec           speculative decoding on SmolLM2: single stream vs llama-server with the same
#                  n-gram and draft settings, then the engine at 1, 4, 16, 64 requests, on and off
#   vision [WHICH] image prompts (a random CLIP-L/336 projector, f16) vs llama-server and
#                  llama-cpp-python: WHICH = smollm2 (default) or 8b (after make8b)
#   profile [M]    engine step breakdown, 64 x 128 tokens, on GPU 0 (scripts/bench/engine_profile.py)
#   multigpu       split_mode tests + throughput over all GPUs (scripts/bench/multi_gpu.py)
#   soak [N]       scripts/soak.py with all layers on GPU 0: RSS and GPU memory growth
#   wheel          build the CUDA wheel and run it from a clean install (needs the nv parts)
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
    --cuda-arch "${CUDA_ARCH:-90}" --tools "${TOOLS:-all}" --jobs "$(nproc)" \
    --cmake-arg="-DGIT_EXE=$PWD/scripts/pinned_git.sh" || return 1
  # Workaround: build_libllama.py copies libllama*.so and libggml*.so only, while the tools also
  # link libllama-<tool>-impl.so and libllama-common.so (from the same build folder).
  cp -P "${LLAMA_FFI_CACHE:-$HOME/.cache/llama_ffi}"/build/*/bin/libllama-*.so* vendor/lib/ 2>/dev/null
  ls -la vendor/lib vendor/bin
  $PY -c "import llama_ffi; print(llama_ffi.system_info()); print(llama_ffi.devices())"
}

stage_parts() {
  # Every carried .gpu/<name>N/ holds one part of a big file and a MANIFEST naming the file,
  # its destination folder and the sha256 of the whole and of each part. Parts wait in
  # DEST/.parts-NAME/ until all are in; then the file is put together and checked.
  local found=0 d name dest parts
  for d in .gpu/*/; do
    [ -f "$d/MANIFEST" ] || continue
    found=1
    name=$(awk '$1=="name"{print $2}' "$d/MANIFEST")
    dest=$(awk '$1=="dest"{print $2}' "$d/MANIFEST")
    dest=${dest:-models}
    mkdir -p "$dest/.parts-$name"
    cp "$d/MANIFEST" "$dest/.parts-$name/MANIFEST"
    cp "$d"/part.* "$dest/.parts-$name/" && log "took $(ls "$d" | grep part | tr '\n' ' ')from $d"
  done
  [ $found = 1 ] || { log "no .gpu/<name>N with a MANIFEST carried"; return 1; }
  for parts in models/.parts-* /tmp/nvidia-wheels/.parts-*; do
    [ -f "$parts/MANIFEST" ] || continue
    assemble "$parts" || return 1
  done
}

assemble() {  # assemble DEST/.parts-NAME
  local parts=$1 dest name want n got have=0
  dest=$(dirname "$parts")
  name=$(awk '$1=="name"{print $2}' "$parts/MANIFEST")
  want=$(awk '$1=="sha256"{print $2}' "$parts/MANIFEST")
  n=$(awk '$1=="parts"{print $2}' "$parts/MANIFEST")
  while read -r _ part sum; do
    if [ -f "$parts/$part" ]; then
      [ "$(sha256sum "$parts/$part" | cut -d' ' -f1)" = "$sum" ] || { log "$part corrupt"; rm "$parts/$part"; continue; }
      have=$((have + 1))
    fi
  done < <(grep '^part ' "$parts/MANIFEST")
  log "$name: $have of $n parts here"
  [ "$have" = "$n" ] || return 0
  cat $(grep '^part ' "$parts/MANIFEST" | awk -v d="$parts" '{print d"/"$2}') > "$dest/$name.tmp"
  got=$(sha256sum "$dest/$name.tmp" | cut -d' ' -f1)
  if [ "$got" = "$want" ]; then
    mv "$dest/$name.tmp" "$dest/$name" && rm -rf "$parts" && log "$dest/$name ok (sha256 $got)"
  else
    rm "$dest/$name.tmp"; log "sha256 mismatch for $name: $got != $want"; return 1
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
    ${WORKLOADS:+--workloads "$WORKLOADS"} \
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

stage_spec() {
  ensure_site || return 1
  $PY -m scripts.bench.speculative --model "$SMOL" --draft "$SMOL" --n-gpu-layers 99 --server \
    --repeat "${REPEAT:-3}" > "$OUT/spec-single.log" 2>&1
  tail -n 25 "$OUT/spec-single.log"
  $PY -m scripts.bench.speculative --model "$SMOL" --n-gpu-layers 99 --engine "${COUNTS:-1,4,16,64}" \
    --repeat "${REPEAT:-2}" > "$OUT/spec-engine.log" 2>&1
  tail -n 10 "$OUT/spec-engine.log"
}

stage_vision() {
  ensure_site || return 1
  local model n_embd extra=()
  case "${1:-smollm2}" in
    smollm2) model=$SMOL; n_embd=576 ;;
    8b) model=$BIG; n_embd=4096; extra=(--chat-format chatml) ;;
    *) log "vision: unknown model $1"; return 2 ;;
  esac
  [ -f "$model" ] || { log "no $model"; return 1; }
  local proj=models/mmproj-clip-l-336-random-$n_embd.f16.gguf
  [ -f "$proj" ] || $PY scripts/make_test_mmproj.py "$proj" --shape clip-l-336 --n-embd-text "$n_embd" || return 1
  $PY -m scripts.bench.vision --model "$model" --mmproj "$proj" --n-gpu-layers 99 --repeat "${REPEAT:-3}" \
    "${extra[@]}" > "$OUT/vision-${1:-smollm2}.log" 2>&1
  local r=$?
  tail -n 12 "$OUT/vision-${1:-smollm2}.log"
  $PY -m scripts.bench.vision --model "$model" --mmproj "$proj" --n-gpu-layers 99 --repeat "${REPEAT:-3}" \
    --mixed "${MIXED:-16}" --n-gen 256 > "$OUT/vision-mixed-${1:-smollm2}.log" 2>&1 || r=1
  tail -n 4 "$OUT/vision-mixed-${1:-smollm2}.log"
  return $r
}

stage_profile() {  # where an engine step's time goes (scripts/bench/engine_profile.py)
  ensure_site || return 1
  local model=${1:-$SMOL}
  export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0}
  $PY -m scripts.bench.engine_profile "$model" 64 128
  SWITCH_INTERVAL=0.0005 VARIANTS="device-split asyncio" $PY -m scripts.bench.engine_profile "$model" 64 128 \
    | tail -n 1 | sed 's/asyncio/asyncio, GIL switch 0.5 ms/'
}

stage_multigpu() {  # split_mode tests and throughput on every GPU of the machine
  ensure_site || return 1
  nvidia-smi --query-gpu=index,name,memory.total --format=csv
  $PY -m pytest -q -p no:cacheprovider tests/test_gpu.py -k "split or both_gpus" 2>&1 | tail -n 15
  local r=${PIPESTATUS[0]} model
  for model in "$SMOL" "$BIG"; do
    [ -f "$model" ] && $PY -m scripts.bench.multi_gpu "$model" 128
  done
  return $r
}

stage_soak() {  # RSS and GPU memory over N generations each through Llama and Engine
  ensure_site || return 1
  CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0} $PY scripts/soak.py -n "${1:-1000}" --n-gpu-layers -1 --threads 4
}

stage_wheel() {
  # Build the CUDA wheel here (hatchling from .gpu/whl, offline), install it with NVIDIA's
  # runtime and cuBLAS wheels into an empty folder, and run the demo from /tmp with no
  # compiler on PATH and no CUDA toolkit on the library path; the loaded libcudart and
  # libcublas must come from the nvidia wheels.
  ensure_site || return 1
  local nv=/tmp/nvidia-wheels site=/tmp/cuda-wheel-site nocc=/tmp/no-compiler-bin tool
  ls "$nv"/nvidia_cublas-*.whl >/dev/null 2>&1 || { log "nvidia-cublas not assembled yet: carry .gpu/nvN"; return 1; }
  rm -rf dist "$site" "$nocc" && mkdir -p "$nocc"
  PIP_NO_INDEX=1 PIP_FIND_LINKS=$PWD/.gpu/whl $PY scripts/build_wheel.py --cuda --lib-dir vendor/lib || return 1
  ls -la dist
  $PY -m pip install -q --no-index --find-links .gpu/whl --find-links "$nv" --target "$site" --no-deps \
    dist/llama_ffi-*.whl cffi pycparser nvidia-cuda-runtime nvidia-cublas || return 1
  du -sh "$site"/llama_ffi "$site"/nvidia
  for tool in python3 env sh ls cat nvidia-smi; do ln -s "$(command -v $tool)" "$nocc/$tool" 2>/dev/null; done
  (cd /tmp && env -i HOME=/tmp PATH="$nocc" PYTHONPATH="$site" "$(command -v python3)" - "$OLDPWD/$SMOL" <<'EOF'
import shutil, sys
for cc in ("cc", "gcc", "g++", "c++", "clang", "nvcc"):
    assert shutil.which(cc) is None, f"{cc} is on PATH"
import llama_ffi
from llama_ffi import Llama
llm = Llama(sys.argv[1], n_gpu_layers=-1, verbose=False)
out = llm.create_completion("The capital of France is", max_tokens=12, temperature=0)
maps = open("/proc/self/maps").read()
libs = sorted({line.split()[-1] for line in maps.splitlines()
               if any(k in line for k in ("libcudart", "libcublas", "libllama", "libggml-cuda"))})
print("package:", llama_ffi.__file__)
print("loaded:", *libs, sep="\n  ")
print("text:", repr(out["choices"][0]["text"]))
assert all("cuda-wheel-site" in p for p in libs), "a CUDA library came from outside the installed wheels"
assert any("libcublas" in p for p in libs) and any("libggml-cuda" in p for p in libs)
print("CUDA wheel OK")
EOF
  )
}

stage=${1:-}
shift || true
case "$stage" in
  model) stage=parts ;&
  setup|parts|test|bench|make8b|spec|vision|profile|multigpu|soak|wheel)
    { "stage_$stage" "$@"; echo $? > "$OUT/.rc"; } 2>&1 | tee "$OUT/$stage.log"
    rc=$(cat "$OUT/.rc"); rm -f "$OUT/.rc"
    log "stage $stage finished with status $rc" | tee -a "$OUT/$stage.log"
    exit "$rc" ;;
  *) echo "usage: $0 setup|parts|test|bench [smollm2|8b|all]|make8b|spec|vision [smollm2|8b]|profile [MODEL]|multigpu|soak [N]|wheel" >&2; exit 2 ;;
esac
