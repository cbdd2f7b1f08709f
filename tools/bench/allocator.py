"""Allocator cost: alloc+free pairs on a 16 GiB VA heap, small and mixed sizes, and under fragmentation."""
from __future__ import annotations

import random

from hcq.allocator import VAHeap
from tools.bench import Result, measure

TARGET_US = 1.0  # issue: <= 1 us per alloc/free


def run() -> list[Result]:
    heap = VAHeap(1 << 40, 16 << 30, 256, "bench")
    rng = random.Random(0)
    mixed = [rng.choice([256, 4096, 65536, 1 << 20, 3 << 20]) + rng.randrange(256) for _ in range(1000)]

    def small() -> int:
        for _ in range(1000):
            heap.free(heap.alloc(4096))
        return 2000

    def mixed_pairs() -> int:
        addrs = [heap.alloc(s) for s in mixed]
        for a in addrs:
            heap.free(a)
        return 2 * len(addrs)

    # Fragmented: keep every other block alive so frees cannot merge and searches see many classes.
    keep = [heap.alloc(s) for s in mixed]
    holes = keep[::2]
    for a in holes:
        heap.free(a)

    def fragmented() -> int:
        addrs = [heap.alloc(s) for s in mixed[:500]]
        for a in addrs:
            heap.free(a)
        return 2 * len(addrs)

    results = [measure("allocator: alloc/free 4 KiB", small, target_us=TARGET_US),
               measure("allocator: alloc/free mixed sizes", mixed_pairs, target_us=TARGET_US),
               measure("allocator: alloc/free, fragmented heap", fragmented, target_us=TARGET_US,
                       note=f"{heap.allocations} live blocks")]
    for a in keep[1::2]:
        heap.free(a)
    return results
