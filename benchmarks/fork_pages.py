"""Which memory pages the fork start check copies, and what those pages hold.

    sudo python benchmarks/fork_pages.py [--rounds N]     # Linux; page frames need root

After a fork every page of the parent is shared with the child, and the first write to
one copies it (a minor page fault, about 1.2 µs here). This counts the pages the check
makes the parent copy: a child is forked and kept alive, the physical frame of every
writable page is read from ``/proc/self/pagemap``, the check runs once (fork's
``Popen._launch`` hook around a stub that does not fork, as in ``run.py`` section 2),
and the frames are read again; a page whose frame changed was copied. The same is done
with the stub alone, and the pages copied in every sanitized round but in no native one
are sorted by what lives on them (``gc`` objects and what they refer to).
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import os
import statistics
import struct
import sys
import time
from collections import Counter
from typing import Any, Callable, Dict, List, Set, Tuple

PAGE = os.sysconf("SC_PAGE_SIZE")
PRESENT, FRAME = 1 << 63, (1 << 55) - 1


def child(*args: Any) -> None:
    pass


def writable_regions() -> List[Tuple[int, int]]:
    regions = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            span, perms = line.split()[:2]
            start, end = (int(x, 16) for x in span.split("-"))
            if "w" in perms and end - start < 4 << 30:
                regions.append((start // PAGE, end // PAGE))
    return regions


def frames(pagemap: int, regions: List[Tuple[int, int]]) -> Dict[int, int]:
    """Page number -> physical frame, for every present page of ``regions``."""
    found = {}
    for first, end in regions:
        data = os.pread(pagemap, (end - first) * 8, first * 8)
        for i, (entry,) in enumerate(struct.iter_unpack("Q", data)):
            if entry & PRESENT:
                found[first + i] = entry & FRAME
    return found


def copied_by(fn: Callable[[], Any], pagemap: int) -> Set[int]:
    """The pages the parent copies while running ``fn`` right after a fork."""
    regions = writable_regions()
    gc.disable()
    pid = os.fork()
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    try:
        before = frames(pagemap, regions)
        fn()
        after = frames(pagemap, regions)
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        gc.enable()
    return {page for page, frame in after.items() if before.get(page, frame) != frame}


def what_lives_on(pages: Set[int]) -> Counter:
    """For each page, the most telling kind of object on it."""
    kinds: Dict[int, Set[str]] = {}
    seen: Set[int] = set()
    for obj in gc.get_objects():
        for o in (obj, *gc.get_referents(obj)):
            page = id(o) // PAGE
            if page in pages and id(o) not in seen:
                seen.add(id(o))
                kinds.setdefault(page, set()).add(
                    "type" if isinstance(o, type) else type(o).__name__
                )
    order = ("code", "function", "type", "dict")
    return Counter(next((k for k in order if k in kinds.get(page, ())), "other") for page in pages)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    rounds = parser.parse_args().rounds
    if not sys.platform.startswith("linux"):
        print("fork_pages: needs Linux (/proc/self/pagemap)", file=sys.stderr)
        return 2
    pagemap = os.open("/proc/self/pagemap", os.O_RDONLY)
    if not any(frames(pagemap, writable_regions()).values()):
        print("fork_pages: page frames read as 0: run it as root", file=sys.stderr)
        return 2

    from run import fork_popen_stubs  # this directory's run.py

    import mpsanitizer
    from mpsanitizer import handoff

    mpsanitizer.enable()
    keep = multiprocessing.get_context("spawn").Lock()  # a foreign record: the check runs
    checker = handoff.Checker(mpsanitizer.Settings())

    proc = multiprocessing.get_context("fork").Process(target=child, args=(1, "x"))
    plain, checked = fork_popen_stubs(checker)
    for _ in range(100):  # warm: specialised bytecode, caches filled
        checked._launch(proc)
    native: List[Set[int]] = []
    sanitized: List[Set[int]] = []
    for i in range(rounds):
        sides = [(native, plain), (sanitized, checked)]
        for pages, stub in sides if i % 2 else sides[::-1]:
            pages.append(copied_by(lambda stub=stub: stub._launch(proc), pagemap))
    every = set.intersection(*sanitized) - set.union(*native)
    print(f"Python {sys.version.split()[0]}, {rounds} rounds, small args, a spawn Lock alive")
    print(f"pages copied, stub alone: median {statistics.median(map(len, native))}")
    print(f"pages copied, with the check: median {statistics.median(map(len, sanitized))}")
    print(f"copied by the check in every round: {len(every)}, holding", end=" ")
    print(", ".join(f"{kind} {n}" for kind, n in what_lives_on(every).most_common()))
    del keep
    return 0


if __name__ == "__main__":
    sys.exit(main())
