"""Negative controls: context-agnostic objects and same-context hand-offs stay silent."""

from __future__ import annotations

import multiprocessing
from multiprocessing import shared_memory
from typing import List

import mp_helpers as h
import pytest

pytestmark = pytest.mark.usefixtures("sanitizer", "no_children")


def run(ctx_name: str, target, *args) -> int:
    proc = multiprocessing.get_context(ctx_name).Process(target=target, args=args)
    proc.start()
    proc.join(60)
    return proc.exitcode


@pytest.mark.parametrize("target", h.METHODS)
@pytest.mark.parametrize("origin", h.METHODS)
def test_pipe_connections_are_context_agnostic(origin, target, mixing_warnings: List) -> None:
    reader, writer = multiprocessing.get_context(origin).Pipe(duplex=False)
    assert run(target, h.use_pipe, writer) == 0
    assert reader.recv() == "hello"
    assert mixing_warnings == []


@pytest.mark.parametrize("target", ["spawn", "forkserver"])
def test_manager_proxies_are_context_agnostic(target, mixing_warnings: List) -> None:
    with multiprocessing.get_context("fork").Manager() as manager:
        lock, shared = manager.Lock(), manager.dict()
        assert run(target, h.use_manager_objects, lock, shared) == 0
        assert shared["child"] is True
    assert mixing_warnings == []


@pytest.mark.parametrize("target", h.METHODS)
def test_raw_shared_memory_is_context_agnostic(target, mixing_warnings: List) -> None:
    fork = multiprocessing.get_context("fork")
    value, array = fork.RawValue("i", 0), fork.RawArray("i", 3)
    assert run(target, h.use_raw, value, array) == 0
    assert (value.value, array[0]) == (7, 7)
    assert mixing_warnings == []


@pytest.mark.parametrize("target", h.METHODS)
def test_shared_memory_is_context_agnostic(target, mixing_warnings: List) -> None:
    shm = shared_memory.SharedMemory(create=True, size=8)
    try:
        assert run(target, h.use_shared_memory, shm.name, shm) == 0
        assert shm.buf[0] == 7
    finally:
        shm.close()
        shm.unlink()
    assert mixing_warnings == []


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_lock_re_shared_by_a_child_with_its_own_children_is_silent(method) -> None:
    """The child enables the sanitizer itself and hands the lock it received to
    fork, spawn and forkserver grandchildren: all run, nothing is reported."""
    lock = multiprocessing.get_context(method).Lock()
    assert run(method, h.reshare, lock) == 0


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_lock_a_fork_child_inherited_and_hands_on_is_silent_there(
    method, mixing_warnings: List
) -> None:
    """The fork child inherits the lock with its record: its hand-offs to grandchildren
    are the parent's, reported once, in the parent. (No forkserver grandchild: a fork
    child inherits its parent's forkserver, which is not its child.)"""
    lock = multiprocessing.get_context(method).Lock()
    assert run("fork", h.reshare, lock, ("fork", "spawn")) == 0
    assert len(mixing_warnings) == 1


def test_a_context_of_a_librarys_own_naming_counts_as_its_processes_start_method(
    mixing_warnings: List,
) -> None:
    """A ``BaseContext`` subclass named 'own' whose Process spawns: its lock is a spawn
    lock, silent in its own processes, and named 'spawn' where it mixes."""
    own = h.OwnNamedContext()
    lock = own.Lock()
    proc = own.Process(target=h.touch, args=(lock,))
    assert h.exit_code(proc) == 0
    assert len(mixing_warnings) == 0
    assert (
        h.exit_code(multiprocessing.get_context("fork").Process(target=h.touch, args=(lock,))) == 0
    )
    assert [(f.origin, f.target) for w in mixing_warnings for f in w.message.findings] == [
        ("spawn", "fork")
    ]
