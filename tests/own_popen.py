"""A library's own start method, shaped like loky's: its Popen pickles the process object
its own way (here ``ForkingPickler.dumps``, where loky has a cloudpickle pickler with
multiprocessing's reducers; never ``multiprocessing.reduction.dump``) while it is the
spawning popen, and runs it in a fresh interpreter.

Kept free of pytest imports: the child imports it to find its target.
"""

from __future__ import annotations

import os
import subprocess
import sys
from multiprocessing import context, process, reduction, util
from typing import Any, List, Optional

METHOD = "ownstart"
_CHILD = "import pickle, sys; sys.exit(pickle.load(sys.stdin.buffer)._bootstrap())"


class _DupFd:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    def detach(self) -> int:
        return self.fd


class Popen:
    method = METHOD
    DupFd = _DupFd  # a connection in the pickle: the child gets the same descriptor

    def __init__(self, process_obj: process.BaseProcess) -> None:
        util._flush_std_streams()
        self.returncode: Optional[int] = None
        self._fds: List[int] = []
        self._launch(process_obj)

    def duplicate_for_child(self, fd: int) -> int:
        self._fds.append(fd)
        return fd

    def _launch(self, process_obj: process.BaseProcess) -> None:
        context.set_spawning_popen(self)
        try:
            data = bytes(reduction.ForkingPickler.dumps(process_obj))
        finally:
            context.set_spawning_popen(None)
        path = os.pathsep.join(p for p in sys.path if p)
        self._child = subprocess.Popen(
            [sys.executable, "-c", _CHILD],
            stdin=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": path},
            pass_fds=self._fds,
        )
        self.pid = self._child.pid
        self.sentinel = os.open(os.devnull, os.O_RDONLY)  # BaseProcess wants one; unused here
        assert self._child.stdin is not None
        self._child.stdin.write(data)
        self._child.stdin.close()

    def poll(self, flag: int = os.WNOHANG) -> Optional[int]:
        if self.returncode is None:
            self.returncode = self._child.poll() if flag else self._child.wait()
        return self.returncode

    def wait(self, timeout: Optional[float] = None) -> Optional[int]:
        try:
            self.returncode = self._child.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        return self.returncode

    def terminate(self) -> None:
        self._child.terminate()

    def kill(self) -> None:
        self._child.kill()

    def close(self) -> None:
        os.close(self.sentinel)


class OwnProcess(process.BaseProcess):
    """A Process class of that library: ``start()`` is multiprocessing's own."""

    _start_method = None  # what a child's _bootstrap looks for (Process has it)

    @staticmethod
    def _Popen(process_obj: Any) -> Popen:
        return Popen(process_obj)
