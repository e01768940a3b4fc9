"""The benchmark harness: every figure in docs/benchmarks.md, ours beside its baselines.

Run from the repository root::

    python -m scripts.bench --out bench-results            # everything, on the CPU
    python -m scripts.bench --quick --workloads tg,pp512   # a fast look
    python -m scripts.bench --n-gpu-layers 99 --model M    # on a GPU machine

Modules, one concept each:
  cli        the command line; runs the chosen workloads and writes the report
  workloads  one function per workload; each returns Result rows (ours and baselines)
  worker     the entry point of the child processes that do the measuring
  tasks_ours / tasks_lcpp   what a child measures with llama_ffi / llama-cpp-python
  native     llama-bench, llama-batched-bench, llama-simple: run and parse
  lcpp       makes llama-cpp-python importable over our libllama (from the pinned sdist)
  proc       child processes: run, time, peak RSS, the JSON line protocol
  stats      medians, spreads and ratios (pure functions)
  report     results.json and the Markdown table (pure functions)
  env        the machine, the build and the date

Every implementation runs in its own process so that two copies of libllama (ours through
cffi, llama-cpp-python's through ctypes) never share one.
"""
