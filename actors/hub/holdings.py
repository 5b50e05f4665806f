"""Which batches a hub holds, per node, as sorted closed intervals of seqs.

Hubs of a cluster compare these to find what each lacks (anti-entropy). A spoke pushes in
order, so a node's holdings are one interval plus one per gap a fault left: the summary a
hub sends its peers stays a few numbers per node, whatever the fleet's history."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator

Interval = tuple[int, int]  # (lo, hi), both held


class SeqSet:
    """A set of positive integers kept as disjoint, sorted, non-adjacent closed intervals."""

    __slots__ = ("_los", "_his")

    def __init__(self, intervals: Iterable[Interval] = ()) -> None:
        self._los: list[int] = []
        self._his: list[int] = []
        for lo, hi in intervals:
            self.add_range(lo, hi)

    def __contains__(self, seq: int) -> bool:
        i = bisect.bisect_right(self._los, seq) - 1
        return i >= 0 and seq <= self._his[i]

    def __bool__(self) -> bool:
        return bool(self._los)

    def __len__(self) -> int:
        return sum(hi - lo + 1 for lo, hi in zip(self._los, self._his, strict=True))

    def __iter__(self) -> Iterator[int]:
        for lo, hi in zip(self._los, self._his, strict=True):
            yield from range(lo, hi + 1)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SeqSet) and self.intervals() == other.intervals()

    def intervals(self) -> list[Interval]:
        """The set as [(lo, hi), ...], sorted."""
        return list(zip(self._los, self._his, strict=True))

    def add(self, seq: int) -> None:
        """Add one seq (the common case: just after the last interval)."""
        if self._his and self._his[-1] + 1 == seq:
            self._his[-1] = seq
            return
        self.add_range(seq, seq)

    def add_range(self, lo: int, hi: int) -> None:
        """Add every seq in [lo, hi], merging with the intervals it touches."""
        if hi < lo:
            return
        start = bisect.bisect_left(self._his, lo - 1)  # first interval that could touch [lo, hi]
        end = bisect.bisect_right(self._los, hi + 1)  # one past the last one that could
        if start < end:
            lo, hi = min(lo, self._los[start]), max(hi, self._his[end - 1])
        self._los[start:end] = [lo]
        self._his[start:end] = [hi]

    def remove_below(self, floor: int) -> None:
        """Forget every seq <= floor (retention deleted those batches)."""
        i = bisect.bisect_right(self._his, floor)
        del self._los[:i], self._his[:i]
        if self._los and self._los[0] <= floor:
            self._los[0] = floor + 1

    def maximum(self) -> int:
        """The highest seq held, 0 when empty."""
        return self._his[-1] if self._his else 0

    def missing_from(self, other: Iterable[Interval], floor: int = 0) -> list[Interval]:
        """Intervals of `other` above `floor` that this set lacks, sorted."""
        out: list[Interval] = []
        for lo, hi in other:
            lo = max(lo, floor + 1)
            if hi < lo:
                continue
            i = bisect.bisect_right(self._los, lo) - 1
            if i < 0:
                i = 0
            cur = lo
            while cur <= hi:
                if i < len(self._los) and self._los[i] <= cur <= self._his[i]:
                    cur = self._his[i] + 1
                    i += 1
                    continue
                if i < len(self._los) and self._his[i] < cur:
                    i += 1
                    continue
                nxt = self._los[i] if i < len(self._los) else hi + 1
                end = min(hi, nxt - 1)
                out.append((cur, end))
                cur = end + 1
        return out


def check_intervals(value: object, limit: int = 10_000) -> list[Interval]:
    """Intervals from a peer: a list of [lo, hi] pairs of positive ints with lo <= hi; ValueError else."""
    if not isinstance(value, list) or len(value) > limit:
        raise ValueError(f"expected a list of at most {limit} [lo, hi] pairs")
    out: list[Interval] = []
    for pair in value:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise ValueError(f"expected [lo, hi], got {pair!r:.60}")
        lo, hi = pair
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in (lo, hi)) or hi < lo:
            raise ValueError(f"expected positive integers lo <= hi, got {pair!r:.60}")
        out.append((lo, hi))
    return out
