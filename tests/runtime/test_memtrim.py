"""Releasing freed memory: available on glibc, absent (not an error) elsewhere."""

from __future__ import annotations

import sys

import pytest

from clustersync.runtime.memtrim import trimmer


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_glibc_has_a_trimmer_that_runs() -> None:
    release = trimmer()
    assert release is not None
    freed = [bytes(4096) for _ in range(2000)]
    del freed
    release()  # returns normally (the effect on RSS is measured in benchmarks/memory.py)


def test_a_c_library_without_it_gives_none() -> None:
    assert trimmer("libclustersync-no-such-library.so") is None
