"""What a bigger parent costs every later fork start: importing wrapt, enabling mpsanitizer.

    python benchmarks/fork_footprint.py [--rounds N] [--starts N]

``os.fork()`` copies the parent's page tables and marks its pages copy-on-write, so what
a process has imported makes each of its later fork starts slower, whether or not any
check runs. Each round runs one fresh interpreter per variant (order rotated every
round); each interpreter times ``--starts`` fork ``start()`` calls with small arguments
and reports their median and the median minor page faults per ``start()``:

* native: multiprocessing alone;
* ``import wrapt``: the same, after importing wrapt (what the first start imports);
* enabled: ``mpsanitizer.enable()`` and one start done (the wrapt checks in place), but no
  primitive born outside fork, so the fork walk is skipped.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from typing import Dict, List

CHILD = """
import gc, json, multiprocessing, resource, statistics, sys, time
variant, starts = sys.argv[1], int(sys.argv[2])
if variant == "import wrapt":
    import wrapt
ctx = multiprocessing.get_context("fork")

def one():
    proc = ctx.Process(target=print, args=(1, "x", {"a": 2}))
    gc.collect()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter_ns()
    proc.start()
    elapsed = time.perf_counter_ns() - start
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    proc.join()
    return elapsed / 1000, faults

if variant == "enabled":
    import mpsanitizer
    mpsanitizer.enable()
    one()
for _ in range(5):
    one()
times, faults = zip(*(one() for _ in range(starts)))
print(json.dumps([statistics.median(times), statistics.median(faults), len(sys.modules)]))
"""
VARIANTS = ("native", "import wrapt", "enabled")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--starts", type=int, default=60)
    args = parser.parse_args()
    results: Dict[str, List[List[float]]] = {v: [] for v in VARIANTS}
    for i in range(args.rounds):
        order = VARIANTS[i % 3 :] + VARIANTS[: i % 3]
        for variant in order:
            out = subprocess.run(
                [sys.executable, "-c", CHILD, variant, str(args.starts)],
                capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
            results[variant].append(json.loads(out.strip().splitlines()[-1]))
    print(f"CPython {sys.version.split()[0]}, {args.rounds} rounds x {args.starts} starts\n")
    print("| parent | modules | fork `start()` | vs native | minor faults per `start()` |")
    print("|---|--:|--:|--:|--:|")
    base = statistics.median(r[0] for r in results["native"])
    for variant in VARIANTS:
        median = statistics.median(r[0] for r in results[variant])
        faults = statistics.median(r[1] for r in results[variant])
        modules = int(statistics.median(r[2] for r in results[variant]))
        print(
            f"| {variant} | {modules} | {median:.0f} µs | {median - base:+.0f} µs "
            f"({median / base - 1:+.1%}) | {faults:.0f} |"
        )


if __name__ == "__main__":
    main()
