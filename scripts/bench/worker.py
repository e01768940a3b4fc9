"""Child-process entry point: ``python -m scripts.bench.worker TASK JSON_PARAMS``.

TASK is ``ours.NAME`` or ``lcpp.NAME``; only the module for that side is imported, so a
child holds one binding and one copy of libllama. Prints one result line (proc.MARKER).
"""

from __future__ import annotations

import json
import sys

from .proc import emit


def main(argv: list[str]) -> int:
    task, params = argv[0], json.loads(argv[1])
    side, _, name = task.partition(".")
    if side == "ours":
        from .tasks_ours import TASKS
    elif side == "lcpp":
        from .tasks_lcpp import TASKS
    else:
        raise SystemExit(f"unknown task {task!r}")
    try:
        result = TASKS[name](params)
    except Exception as exc:  # reported to the parent as a row with status "error"
        emit({"error": f"{type(exc).__name__}: {exc}"})
        return 0
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
