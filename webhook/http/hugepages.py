"""The guard's heap on transparent huge pages (Linux), so a review's reads of the view miss the TLB less.

Every review reads the in-memory cluster view: at 100,000 pods ~110 MiB of Python objects spread
over the heap, so a review's few dozen lookups (its node, its tenant, their figures) land on 4 KiB
pages the TLB no longer holds after the TLS, HTTP and kernel work between two reviews; on a VM
each such miss is a two-dimensional page walk. With the heap on 2 MiB pages the same lookups need
512 × fewer TLB entries (issue 17, `benchmarks/FINDINGS.md` section 12: `serve` at 100,000 pods
answered bindings 3.8 ± 4.0 % faster, 62 paired rounds; a process holding a 1.5 GB heap 8.7 ± 5.1 %).

`advise` marks the dense part of every private anonymous read-write mapping (the Python heap:
pymalloc's arenas and malloc's) `MADV_HUGEPAGE`, which lets the kernel back it with huge pages
under THP's `madvise` mode (most distributions' default) as well as `always`, and with `collapse`
asks `MADV_COLLAPSE` (Linux 6.1+) to do so at once rather than at khugepaged's pace. Dense: the
2 MiB-aligned ranges of which at least DENSE of the 4 KiB pages are resident (`mincore`). A huge
page is resident whole, and a heap's mappings are not (`serve` at 100,000 pods: 78 of 111 MiB):
marking the sparse ranges too would make them resident, so they stay on small pages.
What the kernel refuses (THP `never`, an older kernel, a range it cannot collapse) is counted,
never raised: the guard runs the same, on small pages. Elsewhere than Linux it does nothing.

The cost is memory: RSS grows by the non-resident pages of the dense ranges, at most 1 − DENSE of
them (measured in `benchmarks/RESULTS.md`). `ollama-guard serve` advises at
startup and again every minute (a live view grows new arenas); `OLLAMA_GUARD_HUGE_PAGES=false`
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
PAGE = 4096
#: the share of a 2 MiB range's small pages that must be resident for it to go on a huge page
DENSE = 0.9
#: <linux/mman.h>
MADV_HUGEPAGE = 14
MADV_COLLAPSE = 25
MAPS = Path("/proc/self/maps")
#: a mincore byte -> 1 if its page is resident (bit 0; the other bits are reserved)
_RESIDENT_BIT = bytes(value & 1 for value in range(256))

Madvise = Callable[[int, int, int], int]
"""madvise(start, length, advice) -> 0, or the errno of the refusal"""
Resident = Callable[[int, int], bytes | None]
"""mincore(start, length) -> one byte per 4 KiB page, bit 0 set if resident; None if it failed"""


class Region(NamedTuple):
    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start


class Advice(NamedTuple):
    """What one `advise` did: dense ranges and bytes marked, bytes collapsed, refusals by errno name."""

    regions: int = 0
    marked_bytes: int = 0
    collapsed_bytes: int = 0
    refused: tuple[tuple[str, int], ...] = ()

    def describe(self) -> str:
        if not self.regions:
            return "no dense 2 MiB range of heap" + (f" ({_refusals(self.refused)})" if self.refused else "")
        text = f"{self.marked_bytes >> 20} MiB of heap in {self.regions} ranges marked for huge pages"
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


def dense_ranges(region: Region, resident: bytes) -> list[Region]:
    """The 2 MiB-aligned ranges inside `region` with at least DENSE of their pages resident
    (`resident`: mincore's vector for the region), adjacent ones merged."""
    found: list[Region] = []
    start = -(-region.start // HUGE_PAGE) * HUGE_PAGE
    need = int(DENSE * (HUGE_PAGE // PAGE))
    while start + HUGE_PAGE <= region.end:
        first = (start - region.start) // PAGE
        chunk = resident[first : first + HUGE_PAGE // PAGE]
        if sum(chunk.translate(_RESIDENT_BIT)) >= need:  # counted in C: the periodic pass holds the GIL
            if found and found[-1].end == start:
                found[-1] = Region(found[-1].start, start + HUGE_PAGE)
            else:
                found.append(Region(start, start + HUGE_PAGE))
        start += HUGE_PAGE
    return found


def advise(
    *, collapse: bool, madvise: Madvise | None = None, resident: Resident | None = None, maps: Path = MAPS
) -> Advice:
    """Mark the heap's dense ranges for huge pages and, with `collapse`, collapse them now (see
    the module docstring). `madvise` and `resident` are the system calls (ctypes'; tests pass
    their own)."""
    if madvise is None or resident is None:
        libc = _libc()
        if libc is None:
            return Advice(refused=(("unsupported", 1),))
        madvise, resident = madvise or libc[0], resident or libc[1]
    try:
        mappings = heap_regions(maps.read_text(encoding="ascii", errors="replace").splitlines())
    except OSError as exc:
        return Advice(refused=((errno.errorcode.get(exc.errno or 0, "OSError"), 1),))
    regions: list[Region] = []
    for mapping in mappings:
        vector = resident(mapping.start, mapping.size)
        if vector is not None:  # (a mapping unmapped since maps was read: ENOMEM, nothing to do)
            regions += dense_ranges(mapping, vector)
    refused: dict[str, int] = {}
    marked = collapsed = marked_bytes = 0
    for region in regions:
        failure = madvise(region.start, region.size, MADV_HUGEPAGE)
        if failure:
            name = errno.errorcode.get(failure, str(failure))
            refused[name] = refused.get(name, 0) + 1
            continue
        marked += 1
        marked_bytes += region.size
        if collapse:
            failure = madvise(region.start, region.size, MADV_COLLAPSE)
            if failure:
                name = f"collapse {errno.errorcode.get(failure, str(failure))}"
                refused[name] = refused.get(name, 0) + 1
            else:
                collapsed += region.size
    return Advice(marked, marked_bytes, collapsed, tuple(sorted(refused.items())))


def _libc() -> tuple[Madvise, Resident] | None:
    """madvise(2) and mincore(2) through ctypes (which releases the GIL around each call)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        c_madvise, c_mincore = libc.madvise, libc.mincore
    except (OSError, AttributeError):
        return None
    c_madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    c_madvise.restype = ctypes.c_int
    c_mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    c_mincore.restype = ctypes.c_int

    def madvise(start: int, length: int, advice: int) -> int:
        return 0 if c_madvise(start, length, advice) == 0 else ctypes.get_errno() or errno.EINVAL

    def mincore(start: int, length: int) -> bytes | None:
        vector = ctypes.create_string_buffer(-(-length // PAGE))
        return vector.raw if c_mincore(start, length, vector) == 0 else None

    return madvise, mincore
