"""The guard's heap on transparent huge pages (Linux), so a review's reads of the view miss the TLB less.

Every review reads the in-memory cluster view: at 100,000 pods ~110 MiB of Python objects spread
over the heap, so a review's few dozen lookups (its node, its tenant, their figures) land on 4 KiB
pages the TLB no longer holds after the TLS, HTTP and kernel work between two reviews; on a VM
each such miss is a two-dimensional page walk. With the heap on 2 MiB pages the same lookups need
512 × fewer TLB entries (issue 17, `benchmarks/FINDINGS.md` section 12: `serve` at 100,000 pods
answered bindings 4.3 ± 5.0 % faster, 46 paired rounds; a process holding a 1.5 GB heap 8.7 ± 5.1 %).

`advise` marks every private anonymous read-write mapping of at least one huge page (the Python
heap: pymalloc's arenas and malloc's) `MADV_HUGEPAGE`, which lets the kernel back it with huge
pages under THP's `madvise` mode (most distributions' default) as well as `always`, and with
`collapse` asks `MADV_COLLAPSE` (Linux 6.1+) to do so at once rather than at khugepaged's pace.
What the kernel refuses (THP `never`, an older kernel, a range it cannot collapse) is counted,
never raised: the guard runs the same, on small pages. Elsewhere than Linux it does nothing.

The cost is memory: a collapsed 2 MiB range is resident whole, so RSS grows by the unused part of
the ranges collapsed (measured in `benchmarks/RESULTS.md`). `ollama-guard serve` advises at
startup and again every few minutes (a live view grows new arenas); `OLLAMA_GUARD_HUGE_PAGES=false`
turns it off. No I/O besides reading `/proc/self/maps`.
"""

from __future__ import annotations

import ctypes
import errno
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple

HUGE_PAGE = 2 << 20
#: <linux/mman.h>
MADV_HUGEPAGE = 14
MADV_COLLAPSE = 25
MAPS = Path("/proc/self/maps")

Madvise = Callable[[int, int, int], int]
"""madvise(start, length, advice) -> 0, or the errno of the refusal"""


class Region(NamedTuple):
    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start


class Advice(NamedTuple):
    """What one `advise` did: regions and bytes marked, bytes collapsed, refusals by errno name."""

    regions: int = 0
    marked_bytes: int = 0
    collapsed_bytes: int = 0
    refused: tuple[tuple[str, int], ...] = ()

    def describe(self) -> str:
        if not self.regions:
            return "no heap region of 2 MiB or more" + (f" ({_refusals(self.refused)})" if self.refused else "")
        text = f"{self.marked_bytes >> 20} MiB of heap in {self.regions} regions marked for huge pages"
        if self.collapsed_bytes:
            text += f", {self.collapsed_bytes >> 20} MiB collapsed now"
        return text + (f"; refused: {_refusals(self.refused)}" if self.refused else "")


def _refusals(refused: tuple[tuple[str, int], ...]) -> str:
    return ", ".join(f"{name} × {count}" for name, count in refused)


def heap_regions(maps: Iterable[str]) -> list[Region]:
    """The private anonymous read-write mappings of at least one huge page in `/proc/PID/maps`
    lines (`start-end perms offset dev inode [path]`): the anonymous ones and `[heap]`, not files,
    stacks or shared memory. A line that is not of that form is skipped."""
    found = []
    for line in maps:
        parts = line.split(maxsplit=5)
        if len(parts) < 5 or parts[1] != "rw-p" or parts[4] != "0":
            continue
        path = parts[5].strip() if len(parts) == 6 else ""
        if path not in ("", "[heap]"):
            continue
        start, _, end = parts[0].partition("-")
        try:
            region = Region(int(start, 16), int(end, 16))
        except ValueError:
            continue
        if region.size >= HUGE_PAGE:
            found.append(region)
    return found


def advise(*, collapse: bool, madvise: Madvise | None = None, maps: Path = MAPS) -> Advice:
    """Mark the heap's regions for huge pages and, with `collapse`, collapse them now (see the
    module docstring). `madvise` is the system call (ctypes'; tests pass their own)."""
    call = madvise if madvise is not None else _libc_madvise()
    if call is None:
        return Advice(refused=(("unsupported", 1),))
    try:
        regions = heap_regions(maps.read_text(encoding="ascii", errors="replace").splitlines())
    except OSError as exc:
        return Advice(refused=((errno.errorcode.get(exc.errno or 0, "OSError"), 1),))
    refused: dict[str, int] = {}
    marked = collapsed = marked_bytes = 0
    for region in regions:
        failure = call(region.start, region.size, MADV_HUGEPAGE)
        if failure:
            name = errno.errorcode.get(failure, str(failure))
            refused[name] = refused.get(name, 0) + 1
            continue
        marked += 1
        marked_bytes += region.size
        if collapse:
            failure = call(region.start, region.size, MADV_COLLAPSE)
            if failure:
                name = f"collapse {errno.errorcode.get(failure, str(failure))}"
                refused[name] = refused.get(name, 0) + 1
            else:
                collapsed += region.size
    return Advice(marked, marked_bytes, collapsed, tuple(sorted(refused.items())))


def _libc_madvise() -> Madvise | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.madvise
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    function.restype = ctypes.c_int

    def madvise(start: int, length: int, advice: int) -> int:
        return 0 if function(start, length, advice) == 0 else ctypes.get_errno() or errno.EINVAL

    return madvise
