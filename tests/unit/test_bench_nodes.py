"""The soak's RSS breakdown reads each map's kind from /proc/PID/smaps correctly."""

from __future__ import annotations

import os

from bench.bench_nodes import PARTS, rss_parts, slope_mb_per_hour, split_smaps

SMAPS = """\
55d0c0a00000-55d0c1200000 rw-p 00000000 00:00 0                          [heap]
Size:               8192 kB
Rss:                6000 kB
7f2ee8000000-7f2ee8d53000 rw-p 00000000 00:00 0
Rss:                2048 kB
VmFlags: rd wr mr mw me nr sd
7f2ee8d53000-7f2eec000000 ---p 00000000 00:00 0
Rss:                   0 kB
7f2bb1afd000-7f2bb25fd000 rw-p 00000000 00:00 0
Rss:                1024 kB
7f2ef5a00000-7f2ef7a00000 r--p 00000000 08:01 123                        /work/plugins/sandbox/build/x.cwasm
Rss:               30720 kB
7f2ef8000000-7f2ef8100000 r-xp 00000000 08:01 456                        /usr/lib/libsqlite3.so.0
Rss:                1024 kB
7ffd0a000000-7ffd0a021000 rw-p 00000000 00:00 0                          [stack]
Rss:                 132 kB
"""


def test_split_smaps_sorts_maps_by_kind():
    parts = split_smaps(SMAPS)
    assert parts == {"mapped files": 31.0, "malloc heap": 5.9, "malloc thread arenas": 2.0, "other anonymous": 1.0}


def test_rss_parts_of_this_process_add_up_to_about_its_rss():
    parts = rss_parts(os.getpid())
    with open(f"/proc/{os.getpid()}/status") as f:
        rss = next(int(ln.split()[1]) for ln in f if ln.startswith("VmRSS")) / 1024
    assert set(parts) == set(PARTS) and parts["mapped files"] > 0
    assert 0.8 * rss <= sum(parts.values()) <= 1.05 * rss


def test_slope_of_a_steady_climb():
    assert slope_mb_per_hour([(0, 10.0), (1800, 11.0), (3600, 12.0)]) == 2.0
    assert slope_mb_per_hour([(0, 10.0), (60, 10.0)]) == 0.0  # too few samples to say
