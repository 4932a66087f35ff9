"""Shared fixtures: the sanitizer switched on for one test, and off after it."""

from __future__ import annotations

import gc
import multiprocessing
import warnings
from collections.abc import Sequence
from typing import Iterator, List

import pytest

import mpsanitizer
from mpsanitizer import ContextMixingWarning

pytest_plugins = ["pytester"]


@pytest.fixture
def sanitizer() -> Iterator[None]:
    mpsanitizer.enable()
    try:
        yield
    finally:
        mpsanitizer.disable()
        gc.collect()  # finalize the test's semaphores here, not inside a later test's calls


@pytest.fixture
def no_children() -> Iterator[None]:
    """Fail if a test leaves a child process behind."""
    yield
    for child in multiprocessing.active_children():
        child.join(10)
    assert multiprocessing.active_children() == []


class MixingWarnings(Sequence):
    """The ContextMixingWarnings caught so far: read live, at any point of the test."""

    def __init__(self, caught: List[warnings.WarningMessage]) -> None:
        self._caught = caught

    def _found(self) -> List[warnings.WarningMessage]:
        return [w for w in self._caught if issubclass(w.category, ContextMixingWarning)]

    def __getitem__(self, index):  # type: ignore[override]
        return self._found()[index]

    def __len__(self) -> int:
        return len(self._found())

    def __eq__(self, other: object) -> bool:
        return self._found() == other

    def __repr__(self) -> str:
        return repr(self._found())


@pytest.fixture
def mixing_warnings() -> Iterator[MixingWarnings]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield MixingWarnings(caught)
