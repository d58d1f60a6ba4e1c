"""The heap on transparent huge pages (`webhook.http.hugepages`): which mappings are the heap, what a
real `madvise` does to one, what the kernel refusing does, and that `serve`'s app asks at startup.

The real test maps 8 MiB of anonymous memory in this process, lets `advise` find it in the real
`/proc/self/maps` and call the real system call, and reads the kernel's answer back from
`/proc/self/smaps` (`hg` in a mapping's VmFlags: MADV_HUGEPAGE is set on it).
"""

from __future__ import annotations

import errno
import json
import mmap
import re
import sys
from pathlib import Path

import pytest
from guard_process import log_of, serving
from hypothesis import given
from hypothesis import strategies as st

from webhook.http import hugepages
from webhook.http.hugepages import HUGE_PAGE, MADV_COLLAPSE, MADV_HUGEPAGE, Advice, Region, heap_regions

LINUX = sys.platform.startswith("linux") and Path("/proc/self/smaps").exists()

MAPS = [
    ("anonymous", "7f0000000000-7f0000400000 rw-p 00000000 00:00 0 ", [Region(0x7F0000000000, 0x7F0000400000)]),
    ("anonymous-no-trailing-space", "7f0000000000-7f0000200000 rw-p 00000000 00:00 0",
     [Region(0x7F0000000000, 0x7F0000200000)]),
    ("heap", "55d0c0000000-55d0c8000000 rw-p 00000000 00:00 0                          [heap]",
     [Region(0x55D0C0000000, 0x55D0C8000000)]),
    ("smaller-than-a-huge-page", "7f0000000000-7f00001ff000 rw-p 00000000 00:00 0 ", []),
    ("file-backed", "7f0000000000-7f0000400000 rw-p 00000000 08:01 1234 /usr/lib/libc.so.6", []),
    ("stack", "7ffc00000000-7ffc00400000 rw-p 00000000 00:00 0                          [stack]", []),
    ("read-only", "7f0000000000-7f0000400000 r--p 00000000 00:00 0 ", []),
    ("shared", "7f0000000000-7f0000400000 rw-s 00000000 00:01 77 /dev/zero (deleted)", []),
    ("garbage", "not a maps line", []),
    ("bad-address", "7fzz-7f0000400000 rw-p 00000000 00:00 0 ", []),
    ("empty", "", []),
]


@pytest.mark.parametrize(("line", "expected"), [(line, want) for _, line, want in MAPS], ids=[m[0] for m in MAPS])
def test_the_heap_is_the_private_anonymous_writable_mappings_of_a_huge_page_or_more(
    line: str, expected: list[Region]
) -> None:
    assert heap_regions([line]) == expected


def ALL_RESIDENT(start: int, length: int) -> bytes:
    return b"\x01" * (length // hugepages.PAGE)


MIB2 = HUGE_PAGE // hugepages.PAGE  # small pages per huge page
NEED = int(hugepages.DENSE * MIB2)
BASE = 0x7F0000000000  # 2 MiB-aligned
DENSITY = [
    ("all-resident", Region(BASE, BASE + 3 * HUGE_PAGE), b"\x01" * 3 * MIB2, [Region(BASE, BASE + 3 * HUGE_PAGE)]),
    ("none-resident", Region(BASE, BASE + 2 * HUGE_PAGE), bytes(2 * MIB2), []),
    ("middle-sparse", Region(BASE, BASE + 3 * HUGE_PAGE),
     b"\x01" * MIB2 + b"\x01" * (MIB2 // 2) + bytes(MIB2 // 2) + b"\x01" * MIB2,
     [Region(BASE, BASE + HUGE_PAGE), Region(BASE + 2 * HUGE_PAGE, BASE + 3 * HUGE_PAGE)]),
    ("exactly-dense", Region(BASE, BASE + HUGE_PAGE),
     b"\x01" * NEED + bytes(MIB2 - NEED), [Region(BASE, BASE + HUGE_PAGE)]),
    ("one-page-short", Region(BASE, BASE + HUGE_PAGE),
     b"\x01" * (NEED - 1) + bytes(MIB2 - NEED + 1), []),
    ("other-bits-only", Region(BASE, BASE + HUGE_PAGE), b"\x02" * MIB2, []),
    ("unaligned-ends-left-out", Region(BASE + 4096, BASE + 3 * HUGE_PAGE + 4096), b"\x01" * (3 * MIB2),
     [Region(BASE + HUGE_PAGE, BASE + 3 * HUGE_PAGE)]),
    ("smaller-than-aligned-chunk", Region(BASE + 4096, BASE + HUGE_PAGE + 4096), b"\x01" * MIB2, []),
]


@pytest.mark.parametrize(("region", "resident", "expected"), [d[1:] for d in DENSITY], ids=[d[0] for d in DENSITY])
def test_only_aligned_ranges_with_most_pages_resident_go_on_huge_pages(
    region: Region, resident: bytes, expected: list[Region]
) -> None:
    """A huge page is resident whole: a range the heap holds but does not use stays on small pages."""
    assert hugepages.dense_ranges(region, resident) == expected


def test_sparse_address_space_is_not_marked(tmp_path: Path) -> None:
    maps = tmp_path / "maps"
    maps.write_text(f"{BASE:x}-{BASE + 4 * HUGE_PAGE:x} rw-p 00000000 00:00 0 \n")
    calls: list[tuple[int, int, int]] = []
    half = b"\x01" * (2 * MIB2) + bytes(2 * MIB2)
    advice = hugepages.advise(collapse=True, madvise=lambda *a: calls.append(a) or 0, resident=lambda s, n: half,
                              maps=maps)
    assert calls == [(BASE, 2 * HUGE_PAGE, MADV_HUGEPAGE), (BASE, 2 * HUGE_PAGE, MADV_COLLAPSE)]
    assert advice.marked_bytes == advice.collapsed_bytes == 2 * HUGE_PAGE


@given(st.lists(st.text(max_size=80), max_size=20))
def test_any_text_reads_to_heap_regions_without_raising(lines: list[str]) -> None:
    for region in heap_regions(lines):
        assert region.size >= HUGE_PAGE


def test_each_region_is_marked_then_collapsed_and_refusals_are_counted_not_raised(tmp_path: Path) -> None:
    maps = tmp_path / "maps"
    maps.write_text(
        "7f0000000000-7f0000400000 rw-p 00000000 00:00 0 \n"
        "7f1000000000-7f1000800000 rw-p 00000000 00:00 0 \n"
        "7f2000000000-7f2000200000 rw-p 00000000 00:00 0 \n"
        "7f3000000000-7f3000001000 rw-p 00000000 00:00 0 \n"  # too small: never asked
    )
    calls: list[tuple[int, int, int]] = []

    def madvise(start: int, length: int, advice: int) -> int:
        calls.append((start, length, advice))
        if start == 0x7F2000000000:
            return errno.EINVAL if advice == MADV_HUGEPAGE else 0  # THP "never" or not supported here
        return errno.EAGAIN if (start, advice) == (0x7F1000000000, MADV_COLLAPSE) else 0

    advice = hugepages.advise(collapse=True, madvise=madvise, resident=ALL_RESIDENT, maps=maps)
    assert advice == Advice(regions=2, marked_bytes=12 << 20, collapsed_bytes=4 << 20,
                            refused=(("EINVAL", 1), ("collapse EAGAIN", 1)))
    assert calls == [
        (0x7F0000000000, 4 << 20, MADV_HUGEPAGE), (0x7F0000000000, 4 << 20, MADV_COLLAPSE),
        (0x7F1000000000, 8 << 20, MADV_HUGEPAGE), (0x7F1000000000, 8 << 20, MADV_COLLAPSE),
        (0x7F2000000000, 2 << 20, MADV_HUGEPAGE),
    ]
    assert advice.describe() == (
        "12 MiB of heap in 2 ranges marked for huge pages, 4 MiB collapsed now; "
        "refused: EINVAL × 1, collapse EAGAIN × 1"
    )
    calls.clear()
    assert hugepages.advise(collapse=False, madvise=madvise, resident=ALL_RESIDENT, maps=maps).collapsed_bytes == 0
    assert {advice for _, _, advice in calls} == {MADV_HUGEPAGE}


def test_no_maps_file_is_reported_not_raised(tmp_path: Path) -> None:
    advice = hugepages.advise(collapse=True, madvise=lambda *_: 0, resident=ALL_RESIDENT, maps=tmp_path / "absent")
    assert advice == Advice(refused=(("ENOENT", 1),))
    assert advice.describe() == "no dense 2 MiB range of heap (ENOENT × 1)"


@pytest.mark.skipif(not LINUX, reason="/proc/self/smaps and madvise are Linux's")
def test_the_real_system_call_marks_an_anonymous_mapping_of_this_process() -> None:
    region = mmap.mmap(-1, 8 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        region.write(b"x" * len(region))  # every page resident
        aligned = -(-_address(region) // HUGE_PAGE) * HUGE_PAGE  # the first 2 MiB boundary inside it
        assert not _huge_page_flag(aligned)
        advice = hugepages.advise(collapse=False)
        assert advice.regions >= 1 and advice.marked_bytes >= 3 * HUGE_PAGE, advice
        assert _huge_page_flag(aligned), "MADV_HUGEPAGE is not set on the range advise found"
    finally:
        region.close()


def _address(region: mmap.mmap) -> int:
    import ctypes

    return ctypes.addressof(ctypes.c_char.from_buffer(region))


def _huge_page_flag(address: int) -> bool:
    """Whether the smaps entry holding `address` has the `hg` VmFlag (MADV_HUGEPAGE)."""
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if match := re.match(r"^([0-9a-f]+)-([0-9a-f]+) ", line):
            inside = int(match.group(1), 16) <= address < int(match.group(2), 16)
        elif inside and line.startswith("VmFlags:"):
            return "hg" in line.split()[1:]
    return False


@pytest.mark.skipif(not LINUX, reason="/proc/self/smaps and madvise are Linux's")
@pytest.mark.parametrize("setting", [None, "false"], ids=["default", "turned-off"])
def test_serve_puts_its_heap_on_huge_pages_unless_turned_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setting: str | None
) -> None:
    """A real `ollama-guard serve` (the embedded snapshot): by default its startup line says what
    it marked, and the kernel shows its heap marked; `OLLAMA_GUARD_HUGE_PAGES=false` leaves both out."""
    if setting is None:
        monkeypatch.delenv("OLLAMA_GUARD_HUGE_PAGES", raising=False)
    else:
        monkeypatch.setenv("OLLAMA_GUARD_HUGE_PAGES", setting)
    with serving(tmp_path) as guard:
        smaps = Path(f"/proc/{guard.process.pid}/smaps").read_text()
    lines = [json.loads(line) for line in log_of(tmp_path).splitlines() if line.startswith("{")]
    said = [line["heap"] for line in lines if line.get("msg") == "huge pages"]
    if setting is None:
        assert len(said) == 1 and re.match(r"^\d+ MiB of heap in \d+ ranges marked for huge pages", said[0]), said
        assert re.search(r"^VmFlags:.* hg\b", smaps, re.MULTILINE), "no mapping of the guard is marked"
    else:
        assert said == []
        assert not re.search(r"^VmFlags:.* hg\b", smaps, re.MULTILINE)
