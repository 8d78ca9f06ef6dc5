"""Compact storage of many similar JSON documents: compressed against a preset dictionary.

Objects of one kind share most of their text (field names, structure, common values), which a
single object's own compression cannot exploit: a 3 KB pod deflates to about 1 KB on its own,
and to a few hundred bytes against a dictionary made of the first objects of its kind. The
dictionary is learned once and kept for the packer's life, so entries packed before and after a
relist stay readable with the same dictionary.

Against the dictionary, entries are zstd frames (level 1, the dictionary as raw content) where
the ``zstandard`` package is installed, else raw deflate (zlib-ng). Deflate must copy a
compressor primed with the dictionary for every entry: zlib-ng's state is about 165 KB (its hash
table has a fixed size), and that copy, which also pushes the object being cached out of the
CPU's caches, was about half the cost of packing in the informer's list path; zstd references
its prepared dictionary instead. On the benchmark's pods (docs/benchmarks.md, "The agent's list
path") zstd entries are also about 60 bytes smaller (about 110 instead of 170). Every packer
reads both kinds of entries (zstd ones only where the package is installed).
"""

from __future__ import annotations

import importlib
from typing import Any

try:
    # zlib-ng writes and reads the same raw deflate as zlib (entries are interchangeable), in
    # about half the CPU here; zlib where it could not be installed.
    from zlib_ng import zlib_ng as _zlib
except ImportError:  # pragma: no cover - zlib-ng is a dependency
    import zlib as _zlib  # type: ignore[no-redef]

try:
    _zstd: Any = importlib.import_module("zstandard")
except ImportError:  # pragma: no cover - a dependency; entries are deflated without it
    _zstd = None

_ERROR: type[Exception] = _zlib.error  # type: ignore[assignment] # an instance in the stub

# Raw deflate (no zlib header and trailer: 6 bytes an entry that nothing here checks), an 8 KiB
# window with a dictionary as large, level 1 and memLevel 4. Each pack copies the primed
# compressor, whose window and hash tables grow with the window: on the benchmark's 5 KB pods
# (best of 5, one core) zlib-ng at 8 KiB and level 1 packs in 7 us and unpacks in 2-5 us, where
# zlib at 32 KiB and level 3 (the choice before) took 13 us and 3-8 us, for entries about 35
# bytes larger (about 140-160 bytes instead of 110-120).
_WBITS = -13
_LEVEL = 1
_MEM_LEVEL = 4
DICTIONARY_SIZE = 8 * 1024
SAMPLES = 8  # documents learned before the dictionary is made
_ZSTD_LEVEL = 1
# A zstd frame says how large its content is; an entry is at most one object (frames are
# limited to a few MiB), so a larger claim is damage, not a reason to allocate.
_ZSTD_LIMIT = 64 * 1024 * 1024

_PLAIN = b"\x00"  # deflated without a dictionary (packed before the dictionary existed)
_PRIMED = b"\x01"  # deflated against the dictionary
_ZSTD = b"\x02"  # a zstd frame against the dictionary


def zstd_available() -> bool:
    """Whether entries are packed with zstd here (else deflated)."""
    return _zstd is not None


class PackError(ValueError):
    """Bytes that this packer did not make (or that were damaged)."""


class Packer:
    """Packs and unpacks byte strings; the first ``samples`` documents packed become the
    dictionary for every later one."""

    def __init__(self, samples: int = SAMPLES, *, dictionary: bytes | None = None) -> None:
        """``dictionary``: one an earlier packer learned (entries it packed stay readable)."""
        self._wanted = samples
        self._samples: list[bytes] = []
        self._dictionary: bytes | None = None
        self._primed: Any = None  # a deflate compressor primed with the dictionary
        self._zstd_packer: Any = None  # zstd's, where it is installed
        self._zstd_unpacker: Any = None
        if dictionary is not None:
            self._prime(dictionary)

    @property
    def dictionary(self) -> bytes | None:
        return self._dictionary

    def pack(self, data: bytes) -> bytes:
        if self._dictionary is None:
            self._learn(data)
        if self._zstd_packer is not None:
            packed: bytes = self._zstd_packer.compress(data)
            return _ZSTD + packed
        if self._primed is None:
            alone = _zlib.compressobj(_LEVEL, _zlib.DEFLATED, _WBITS, _MEM_LEVEL)
            return _PLAIN + _deflate(alone, data)
        return _PRIMED + _deflate(self._primed.copy(), data)

    def unpack(self, packed: bytes) -> bytes:
        tag, body = packed[:1], packed[1:]
        if tag == _ZSTD:
            return self._unpack_zstd(body)
        try:
            if tag == _PRIMED and self._dictionary is not None:
                inflater = _zlib.decompressobj(_WBITS, zdict=self._dictionary)
            elif tag == _PLAIN:
                inflater = _zlib.decompressobj(_WBITS)
            else:
                raise PackError(f"unknown packing tag {tag!r}")
            data = inflater.decompress(body)
        except _ERROR as exc:
            raise PackError(f"damaged packed bytes: {exc}") from None
        if not inflater.eof:
            raise PackError("truncated packed bytes")
        return data

    def _learn(self, data: bytes) -> None:
        self._samples.append(bytes(data))
        if len(self._samples) < self._wanted:
            return
        # zlib reaches back from the end of the dictionary first: the latest samples go last.
        self._prime(b"".join(self._samples)[-DICTIONARY_SIZE:])
        self._samples = []

    def _unpack_zstd(self, body: bytes) -> bytes:
        if self._zstd_unpacker is None:
            raise PackError("zstd-packed bytes without a dictionary or without zstd here")
        try:
            size = _zstd.frame_content_size(body)
            if not 0 <= size <= _ZSTD_LIMIT:
                raise PackError(f"a zstd frame claiming {size} bytes")
            data: bytes = self._zstd_unpacker.decompress(body)
        except _zstd.ZstdError as exc:
            raise PackError(f"damaged packed bytes: {exc}") from None
        return data

    def _prime(self, dictionary: bytes) -> None:
        self._dictionary = dictionary
        if _zstd is not None:
            prepared = _zstd.ZstdCompressionDict(
                dictionary, dict_type=_zstd.DICT_TYPE_RAWCONTENT
            )
            prepared.precompute_compress(level=_ZSTD_LEVEL)
            self._zstd_packer = _zstd.ZstdCompressor(
                dict_data=prepared,
                level=_ZSTD_LEVEL,
                write_checksum=False,  # nothing checks it here (deflate entries have none)
                write_dict_id=False,  # a packer has one dictionary
            )
            self._zstd_unpacker = _zstd.ZstdDecompressor(dict_data=prepared)
            return
        self._primed = _zlib.compressobj(
            _LEVEL, _zlib.DEFLATED, _WBITS, _MEM_LEVEL, zdict=dictionary
        )


def _deflate(compressor: Any, data: bytes) -> bytes:
    packed: bytes = compressor.compress(data) + compressor.flush()
    return packed
