"""Every kind x every (origin, target) start method pair x every channel, on real processes.

For each cell the sanitizer's verdict is asserted; for error cells the same
hand-off is also run without the sanitizer, to prove that CPython really fails.
"""

from __future__ import annotations

import gc
import itertools
import multiprocessing
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import mp_helpers as h
import pytest

import mpsanitizer
from mpsanitizer import ContextMismatchError, ContextMixingWarning

TIMEOUT = 60
NATIVE_CHECK = h.NATIVE_CHECK
PAIRS = list(itertools.product(h.METHODS, h.METHODS))


def verdict(origin: str, target: str) -> str:
    if origin == target:
        return "nothing"
    return "error" if origin == "fork" else "warning"


def hand_off(channel: str, obj: Any, ctx: Any) -> int:
    """Give ``obj`` to a child of ``ctx`` through ``channel``; return its exit code."""
    if channel == "pool":
        with ctx.Pool(1, initializer=h.touch_init, initargs=(None, obj)) as pool:
            return 0 if pool.apply_async(h.ping).get(TIMEOUT) == "pong" else 1
    if channel == "executor":
        with ProcessPoolExecutor(
            1, mp_context=ctx, initializer=h.touch_init, initargs=(None, obj)
        ) as executor:
            return 0 if executor.submit(h.ping).result(TIMEOUT) == "pong" else 1
    return h.exit_code(h.start_process(channel, obj, ctx), TIMEOUT)


def assert_native_failure(channel: str, obj: Any, ctx: Any) -> None:
    """Without the sanitizer, CPython fails this hand-off in its own way."""
    if NATIVE_CHECK:
        with pytest.raises(RuntimeError, match="A SemLock created in a fork context"):
            hand_off(channel, obj, ctx)
    elif channel == "pool":
        pool = ctx.Pool(1, initializer=h.touch_init, initargs=(None, obj))
        try:
            deadline = time.monotonic() + TIMEOUT
            task = pool.apply_async(int)
            workers = set()  # every worker met: the pool drops a dead one from _pool at once

            def crashed() -> bool:
                return any(worker.exitcode == -11 for worker in workers)

            while not crashed() and time.monotonic() < deadline:
                workers.update(list(pool._pool))
                time.sleep(0.02)
            # A worker may also hang on the dead semaphore instead: the task never returns.
            assert crashed() or not task.ready(), "pool workers should crash with SIGSEGV"
        finally:
            pool.terminate()
            pool.join()
    elif channel == "executor":
        with pytest.raises(BrokenProcessPool):
            hand_off(channel, obj, ctx)
    else:
        assert hand_off(channel, obj, ctx) == -11


@pytest.mark.parametrize("channel", list(h.CHANNEL_PATHS))
@pytest.mark.parametrize(("origin", "target"), PAIRS)
@pytest.mark.parametrize("kind", list(h.MAKERS))
def test_cell(kind: str, origin: str, target: str, channel: str, no_children: None) -> None:
    ctx = multiprocessing.get_context(target)
    expected = verdict(origin, target)
    mpsanitizer.enable()
    try:
        obj = h.MAKERS[kind](multiprocessing.get_context(origin))
        if expected == "error":
            with pytest.raises(ContextMismatchError) as info:
                hand_off(channel, obj, ctx)
            finding = info.value.findings[0]
            assert len(info.value.findings) == 1
            assert multiprocessing.active_children() == []
        else:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                assert hand_off(channel, obj, ctx) == 0
            found = [w.message for w in caught if issubclass(w.category, ContextMixingWarning)]
            if expected == "nothing":
                assert found == []
                return
            assert found, "expected a ContextMixingWarning"
            finding = found[0].finding
    finally:
        mpsanitizer.disable()
        gc.collect()  # finalize semaphores here, not inside the resource tracker's own calls
    assert finding.object_type == kind
    assert finding.path == h.CHANNEL_PATHS[channel]
    assert (finding.origin, finding.target) == (origin, target)
    if expected == "error":
        assert finding.created_at, "fork-born objects made while enabled have a creation stack"
        assert_native_failure(channel, obj, ctx)
