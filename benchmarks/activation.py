"""What activation costs the processes it reaches.

    python benchmarks/activation.py [--rounds N]

Medians of interleaved rounds (on/off alternate, order flipped every round):
1. the ``mpsanitizer.pth`` line with ``MPSANITIZE`` unset, timed in-process;
2. ``python -c pass`` with ``MPSANITIZE=1`` vs unset (a program that never imports
   multiprocessing);
3. ``python -c "import multiprocessing.spawn"``, the interpreter start a spawn child pays;
4. spawn start+join where only the child is activated (the parent stays native,
   ``MPSANITIZE`` toggled in ``os.environ`` around each start);
5. the first forkserver start+join after the server was stopped: a forkserver's children
   are forked from its (activated) server, so activation is paid once per server, here.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import sysconfig
import time
import timeit
from pathlib import Path
from typing import Callable, Dict, List, Tuple

PTH = Path(__file__).resolve().parent.parent / "mpsanitizer.pth"


def target() -> None:
    """The child does nothing: what is measured is start, activation, join."""


def interleave(run: Callable[[bool], float], rounds: int) -> Tuple[float, float, float]:
    samples: Dict[bool, List[float]] = {False: [], True: []}
    for i in range(rounds):
        for on in (False, True) if i % 2 else (True, False):
            samples[on].append(run(on))
    off, on = statistics.median(samples[False]), statistics.median(samples[True])
    q = statistics.quantiles(samples[True], n=4) if rounds >= 4 else [on, on, on]
    return off, on, q[2] - q[0]


def environ(on: bool) -> Dict[str, str]:
    env = dict(os.environ)
    env.pop("MPSANITIZE_OPTIONS", None)
    if on:
        env["MPSANITIZE"] = "1"
    else:
        env.pop("MPSANITIZE", None)
    return env


def pth_line_cost() -> float:
    """µs to evaluate the .pth line with the variable unset."""
    line = PTH.read_text().strip()
    saved = os.environ.pop("MPSANITIZE", None)
    try:
        code = compile(line, str(PTH), "exec")
        number = 200_000
        return min(timeit.repeat(lambda: exec(code, {}), number=number, repeat=5)) / number * 1e6
    finally:
        if saved is not None:
            os.environ["MPSANITIZE"] = saved


def interpreter_start(code: str) -> Callable[[bool], float]:
    def run(on: bool) -> float:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], env=environ(on), check=True)
        return time.perf_counter() - start

    return run


def child_start(method: str) -> Callable[[bool], float]:
    ctx = multiprocessing.get_context(method)

    def run(on: bool) -> float:
        os.environ.clear()
        os.environ.update(environ(on))
        if method == "forkserver":  # a fresh server, started with this environment
            from multiprocessing import forkserver

            forkserver._forkserver._stop()
        start = time.perf_counter()
        proc = ctx.Process(target=target)
        proc.start()
        proc.join()
        return time.perf_counter() - start

    return run


WHAT = {"spawn": "child activated", "forkserver": "first child of a fresh server"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    rounds = parser.parse_args().rounds
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        print(
            "note: PYTHONDONTWRITEBYTECODE is set; installed wheels ship bytecode, so run "
            "once without it (or compileall the package) for representative numbers"
        )
    print(
        f"CPython {sysconfig.get_python_version()} ({sys.version.split()[0]}), {rounds} rounds, "
        f"{os.cpu_count()} cores\n"
    )
    print("| what | off | on | delta | ratio | budget | within |")
    print("|---|---|---|---|---|---|---|")
    cost = pth_line_cost()
    print(
        f"| .pth line, MPSANITIZE unset | | {cost:.2f} µs | | | 50 µs, no import | "
        f"{'yes' if cost <= 50 else 'no'} |"
    )
    for code, budget in (("pass", "1 ms"), ("import multiprocessing.spawn", "")):
        off, on, iqr = interleave(interpreter_start(code), rounds)
        delta = (on - off) * 1e3
        within = ("yes" if delta <= 1 else "no") if budget else ""
        print(
            f"| `python -c {code!r}` | {off * 1e3:.2f} ms | {on * 1e3:.2f} ms | "
            f"{delta:+.2f} ms | {on / off:.3f} | {budget} | {within} |"
        )
    saved = dict(os.environ)
    try:
        for method in ("spawn", "forkserver"):
            off, on, iqr = interleave(child_start(method), rounds)
            ratio = on / off
            print(
                f"| {method} start+join, {WHAT[method]} | {off * 1e3:.2f} ms | {on * 1e3:.2f} ms "
                f"| {(on - off) * 1e3:+.2f} ms | {ratio:.3f} | 5% | "
                f"{'yes' if ratio <= 1.05 else 'no'} (IQR of on: {iqr * 1e3:.2f} ms) |"
            )
    finally:
        os.environ.clear()
        os.environ.update(saved)


if __name__ == "__main__":
    main()
