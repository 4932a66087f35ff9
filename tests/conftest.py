"""Shared fixtures: the sanitizer switched on for one test, and off after it."""

from __future__ import annotations

import multiprocessing
import warnings
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


@pytest.fixture
def no_children() -> Iterator[None]:
    """Fail if a test leaves a child process behind."""
    yield
    for child in multiprocessing.active_children():
        child.join(10)
    assert multiprocessing.active_children() == []


@pytest.fixture
def mixing_warnings() -> Iterator[List[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found: List[warnings.WarningMessage] = []
        yield found
        found.extend(w for w in caught if issubclass(w.category, ContextMixingWarning))
