"""Run a module under an opcode counter (see benchmarks/opcodes.py): `python _optrace.py -m module args`.

Counting starts at SIGUSR1; SIGUSR2 stops it and writes `opcodes<TAB>calls<TAB>function<TAB>file:line`
rows, most opcodes first, to $OPTRACE_OUT.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
import threading
from collections import Counter
from types import CodeType, FrameType
from typing import Any

_opcodes: Counter[CodeType] = Counter()
_calls: Counter[CodeType] = Counter()
_on = False


def _local(frame: FrameType, event: str, arg: Any) -> Any:
    if event == "opcode":
        _opcodes[frame.f_code] += 1
    return _local


def _global(frame: FrameType, event: str, arg: Any) -> Any:
    if not _on:
        return None
    _calls[frame.f_code] += 1
    frame.f_trace_opcodes = True
    return _local


def _start(*_: object) -> None:
    global _on
    _opcodes.clear()
    _calls.clear()
    _on = True


def _stop(*_: object) -> None:
    global _on
    _on = False
    with open(os.environ["OPTRACE_OUT"], "w") as out:
        for code, n in _opcodes.most_common():
            out.write(f"{n}\t{_calls[code]}\t{code.co_name}\t{code.co_filename}:{code.co_firstlineno}\n")


if __name__ == "__main__":
    signal.signal(signal.SIGUSR1, _start)
    signal.signal(signal.SIGUSR2, _stop)
    sys.settrace(_global)
    threading.settrace(_global)
    module = sys.argv[2]  # argv: _optrace.py -m module args...
    sys.argv = [module, *sys.argv[3:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
