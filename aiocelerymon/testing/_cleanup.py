"""What the test bed started, stopped even when pytest is killed by SIGTERM.

Servers and workers run in sessions of their own (so their children can be stopped as a
group), which also means nothing stops them when pytest dies: Python's default SIGTERM
handling skips every ``finally`` and fixture teardown. A CI timeout or cancel would leave
redis-server and rabbitmq-server running with parent 1 and their temp dirs behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

#: How long the SIGTERM handler gives everything to stop before SIGKILL.
GRACE = 5.0

_lock = threading.Lock()
_processes: dict[int, subprocess.Popen[Any]] = {}
_dirs: dict[str, Path] = {}
_installed = False


@contextlib.contextmanager
def owned_process(proc: subprocess.Popen[Any]) -> Iterator[None]:
    """Register the process group led by ``proc`` for the SIGTERM clean-up while in the block."""
    with _lock:
        _processes[proc.pid] = proc
    try:
        yield
    finally:
        with _lock:
            _processes.pop(proc.pid, None)


@contextlib.contextmanager
def owned_dir(path: Path) -> Iterator[None]:
    """Register a temporary directory for the SIGTERM clean-up while in the block."""
    with _lock:
        _dirs[str(path)] = path
    try:
        yield
    finally:
        with _lock:
            _dirs.pop(str(path), None)


def stop_everything(grace: float = GRACE) -> None:
    """SIGTERM every registered process group, SIGKILL what is left after ``grace``, rm dirs."""
    with _lock:
        processes, dirs = list(_processes.values()), list(_dirs.values())
    for proc in processes:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(max(0.0, deadline - time.monotonic()))
        # The group too: children may outlive their leader.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(1.0)
    for path in dirs:
        shutil.rmtree(path, ignore_errors=True)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    stop_everything()
    # Then die of SIGTERM as before (exit status 143 for the caller), without our handler.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def install_sigterm_handler() -> None:
    """Stop what the test bed started on SIGTERM (unless someone else handles SIGTERM)."""
    global _installed
    if _installed or threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return  # the user's (or another plugin's) handler: theirs to decide
    signal.signal(signal.SIGTERM, _on_sigterm)
    _installed = True
