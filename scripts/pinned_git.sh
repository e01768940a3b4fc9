#!/bin/sh
# Stands in for git while CMake configures the pinned llama.cpp sdist, which has no .git:
# ggml_commit() then reports the commit the sdist was cut from, not "unknown" or the hash of
# whatever repository the tree sits in. Used only by scripts/build_libllama.py.
case "$*" in
  *rev-parse*) echo "${LLAMA_FFI_PINNED_COMMIT:-unknown}" ;;
  *diff-index*) exit 0 ;;
  *) exit 1 ;;
esac
