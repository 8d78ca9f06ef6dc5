"""The agent compresses websocket frames with zlib-ng: the same deflate stream any zlib reads."""

from __future__ import annotations

import zlib
from collections.abc import Iterator

import aiohttp
import orjson
import pytest
from aiohttp.compression_utils import ZLibBackend, ZLibCompressor

from clustersync.runtime.agent_link import use_fast_deflate


@pytest.fixture
def fast_deflate() -> Iterator[None]:
    assert use_fast_deflate()
    try:
        yield
    finally:
        aiohttp.set_zlib_backend(zlib)  # process-wide: other tests get aiohttp's default back


async def test_frames_deflated_with_zlib_ng_inflate_with_plain_zlib(fast_deflate: None) -> None:
    assert ZLibBackend.name == "zlib_ng.zlib_ng"
    # As aiohttp's websocket writer compresses a message: raw deflate, fastest level, one
    # stream per connection flushed after each message (context takeover).
    compressor = ZLibCompressor(level=zlib.Z_BEST_SPEED, wbits=-zlib.MAX_WBITS)
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    for batch in range(3):
        pods = [{"name": f"pod-{batch}-{i}", "spec": {"x": "y" * 50}} for i in range(400)]
        frame = orjson.dumps(pods)
        packed = await compressor.compress(frame) + compressor.flush(zlib.Z_SYNC_FLUSH)
        assert inflater.decompress(packed) == frame
        assert len(packed) < len(frame) / 5
