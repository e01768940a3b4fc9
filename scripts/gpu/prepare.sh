#!/usr/bin/env bash
# Prepare the git-ignored .gpu/ folder: what the GPU machine needs and cannot download.
#
# Each device call carries at most 64 MiB (working tree + the carried paths), so the
# pieces are split into folders that travel one per call:
#   .gpu/src/     llama.cpp.tar.gz  pruned pinned tree (CMake configures and builds it:
#                                   libllama, ggml incl. CUDA and RPC, common, all tools
#                                   and examples sources, vendor/*, gguf-py, the Llama-3 vocab)
#                 llama_cpp_python.tar.gz  llama-cpp-python's pure-Python package (the baseline)
#   .gpu/whl/     cp312 manylinux wheels: cffi (+pycparser), diskcache, typing-extensions
#   .gpu/model1/, .gpu/model2/, .gpu/model3/   the default model in parts < 40 MiB, each
#                 with MANIFEST (file name, destination, sha256 of the whole and of each part)
#   .gpu/nv1/ ... .gpu/nv7/   nvidia-cublas (CUDA 13, 444 MB) in parts < 62 MiB, for the CUDA
#                 wheel's install test (CUDA_WHEEL=0 skips them); the CUDA runtime wheel and
#                 hatchling go to .gpu/whl
#
# Usage: scripts/gpu/prepare.sh [--verify]
#   --verify  also configure and build the pruned tree here (CPU) with
#             scripts/build_libllama.py --source-dir, in a scratch copy of the scripts and
#             a scratch cache, so vendor/ is not touched. Slow on 2 cores.
# Then, on the GPU machine (see scripts/gpu/run.sh and docs/benchmarks.md):
#   carry .gpu/src .gpu/whl -> run.sh setup; carry .gpu/model1 -> run.sh parts; ... model3;
#   carry .gpu/nv1 -> run.sh parts; ... nv7; then run.sh wheel.
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$(pwd)
GPU=$REPO/.gpu
TREE=$(readlink -f vendor/llama.cpp)
SDIST=${LLAMA_FFI_CACHE:-$HOME/.cache/llama_ffi}/downloads/llama_cpp_python-0.3.36.tar.gz
MODEL=${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
PART_SIZE=${PART_SIZE:-36000000}   # bytes; < 40 MiB

log() { echo "[prepare] $*"; }
[ -f "$TREE/include/llama.h" ] || { echo "no pinned tree at vendor/llama.cpp: run scripts/build_libllama.py" >&2; exit 1; }

mkdir -p "$GPU/src" "$GPU/whl"

# --- 1. pruned llama.cpp tree ---------------------------------------------------------------
# Everything CMake's add_subdirectory() reaches must stay (tools/ui and vendor/miniaudio
# included, see docs/ENVIRONMENT); what goes: other GPU backends, docs, media, tests, CI,
# conversion scripts, and all vocab files but Llama-3's.
EXCLUDES=(
  --exclude=./.git --exclude=./.github --exclude=./.devops --exclude=./ci --exclude=./docs
  --exclude=./media --exclude=./tests --exclude=./benches --exclude=./conversion --exclude=./skills
  --exclude=./requirements --exclude=./examples/llama.android
  --exclude=./examples/llama.swiftui --exclude=./examples/model-conversion
)
for backend in cann et hexagon metal musa opencl openvino sycl virtgpu vulkan webgpu zdnn zendnn; do
  EXCLUDES+=(--exclude="./ggml/src/ggml-$backend")
done
# models/: only the Llama-3 vocabulary (make_8b_model.py reads it)
(cd "$TREE" && find ./models -type f ! -name ggml-vocab-llama-bpe.gguf) | sed 's/^/--exclude=/' > "$GPU/.models-excl"
mapfile -t MODEL_EXCL < "$GPU/.models-excl"
rm -f "$GPU/.models-excl"
tar -C "$TREE" "${EXCLUDES[@]}" "${MODEL_EXCL[@]}" -czf "$GPU/src/llama.cpp.tar.gz" .
log "pruned tree: $(du -h "$GPU/src/llama.cpp.tar.gz" | cut -f1)"

# --- 2. llama-cpp-python's Python package (the baseline binding), from the pinned sdist ----
[ -f "$SDIST" ] || { echo "pinned sdist missing at $SDIST: run scripts/build_libllama.py" >&2; exit 1; }
STAGE=$(mktemp -d)
tar -C "$STAGE" -xzf "$SDIST" llama_cpp_python-0.3.36/llama_cpp
tar -C "$STAGE/llama_cpp_python-0.3.36" --exclude=llama_cpp/server -czf "$GPU/src/llama_cpp_python.tar.gz" llama_cpp
rm -rf "$STAGE"
log "llama-cpp-python package: $(du -h "$GPU/src/llama_cpp_python.tar.gz" | cut -f1)"

# --- 3. wheels for the GPU machine's python3.12 (it has numpy, jinja2, pytest; not cffi) ----
rm -f "$GPU"/whl/*.whl
python3 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
  -d "$GPU/whl" "cffi==$(python3 -c "import cffi; print(cffi.__version__)")" pycparser diskcache typing-extensions
# the server extra and its dependencies (the GPU machine has httpx but not these)
python3 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
  -d "$GPU/whl" fastapi uvicorn
log "wheels: $(ls "$GPU/whl" | tr '\n' ' ')"

# --- 4. big files in parts, one folder per device call --------------------------------------
# split_parts FILE DEST PREFIX SIZE: .gpu/PREFIX1, PREFIX2, ... each with one part and a
# MANIFEST (file name, destination folder, sha256 of the whole and of each part); the
# GPU machine's `run.sh parts` stage reassembles FILE in DEST once all parts are in.
split_parts() {
  local file=$1 dest=$2 prefix=$3 size=$4 parts n=0
  rm -rf "$GPU/$prefix"[0-9]*
  parts=$(mktemp -d)
  split -b "$size" -d -a 2 "$file" "$parts/part."
  for part in "$parts"/part.*; do
    n=$((n + 1))
    mkdir -p "$GPU/$prefix$n"
    mv "$part" "$GPU/$prefix$n/"
  done
  rm -rf "$parts"
  {
    echo "name $(basename "$file")"
    echo "dest $dest"
    echo "sha256 $(sha256sum "$file" | cut -d' ' -f1)"
    echo "parts $n"
    for d in "$GPU/$prefix"[0-9]*; do
      for p in "$d"/part.*; do echo "part $(basename "$p") $(sha256sum "$p" | cut -d' ' -f1)"; done
    done
  } > "$GPU/.manifest"
  for d in "$GPU/$prefix"[0-9]*; do cp "$GPU/.manifest" "$d/MANIFEST"; done
  rm "$GPU/.manifest"
  log "$(basename "$file"): $n parts ($(du -sh "$GPU/$prefix"[0-9]* | awk '{print $2 ": " $1}' | tr '\n' ' '))"
}

if [ -f "$MODEL" ]; then
  split_parts "$MODEL" models model "$PART_SIZE"
else
  log "no model at $MODEL: skipped the model parts"
fi

# --- 5. for the CUDA wheel: hatchling (to build it offline) and NVIDIA's CUDA 13 runtime
# and cuBLAS wheels (what the wheel depends on), the latter in parts of < 62 MiB ------------
if [ "${CUDA_WHEEL:-1}" = 1 ]; then
  python3 -m pip download -q --only-binary=:all: -d "$GPU/whl" hatchling
  NV=$(mktemp -d)
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 \
    -d "$NV" "nvidia-cuda-runtime>=13,<14" "nvidia-cublas>=13,<14"
  mv "$NV"/nvidia_cuda_runtime-*.whl "$GPU/whl/"
  split_parts "$(ls "$NV"/nvidia_cublas-*.whl)" /tmp/nvidia-wheels nv 64500000
  rm -rf "$NV"
fi

log "per call: src+whl $(du -shc "$GPU/src" "$GPU/whl" | tail -1 | cut -f1) (+ working tree)"

# --- 6. optional: check that the pruned tree configures and builds (CPU) -------------------
if [ "${1:-}" = "--verify" ]; then
  SCRATCH=$(mktemp -d)
  mkdir -p "$SCRATCH/repo/scripts" "$SCRATCH/src"
  cp scripts/build_libllama.py scripts/registry.py scripts/pinned_git.sh "$SCRATCH/repo/scripts/"
  tar -C "$SCRATCH/src" -xzf "$GPU/src/llama.cpp.tar.gz"
  log "verifying in $SCRATCH (vendor/ untouched)"
  LLAMA_FFI_CACHE=$SCRATCH/cache python3 "$SCRATCH/repo/scripts/build_libllama.py" \
    --source-dir "$SCRATCH/src" --tools "${VERIFY_TOOLS:-llama-bench,llama-batched-bench,llama-simple,llama-quantize}"
  ls -la "$SCRATCH/repo/vendor/lib" "$SCRATCH/repo/vendor/bin"
  log "pruned tree builds; scratch left at $SCRATCH (remove it when done)"
fi
