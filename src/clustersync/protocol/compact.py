"""Compact storage of many similar JSON documents: deflate with a preset dictionary.

Objects of one kind share most of their text (field names, structure, common values), which a
single object's own compression cannot exploit: a 3 KB pod deflates to about 1 KB on its own,
and to a few hundred bytes against a dictionary made of the first objects of its kind. The
dictionary is learned once and kept for the packer's life, so entries packed before and after a
relist stay readable with the same dictionary.
"""

from __future__ import annotations

import zlib

# Raw deflate (no zlib header and trailer: 6 bytes an entry that nothing here checks), a full
# 32 KiB window so the whole dictionary is in reach, level 3 and memLevel 4: about as small as
# level 6 on these documents, and copying the primed compressor (what each pack does) is cheap
# with the smaller hash tables (measured: 13-16 us for a 3-5 KB pod, against 40-190 us at the
# defaults).
_WBITS = -15
_LEVEL = 3
_MEM_LEVEL = 4
DICTIONARY_SIZE = 32 * 1024
SAMPLES = 8  # documents learned before the dictionary is made

_PLAIN = b"\x00"  # deflated without a dictionary (packed before the dictionary existed)
_PRIMED = b"\x01"  # deflated against the dictionary


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
        self._primed: zlib._Compress | None = None
        if dictionary is not None:
            self._prime(dictionary)

    @property
    def dictionary(self) -> bytes | None:
        return self._dictionary

    def pack(self, data: bytes) -> bytes:
        if self._primed is None:
            self._learn(data)
        if self._primed is None:
            alone = zlib.compressobj(_LEVEL, zlib.DEFLATED, _WBITS, _MEM_LEVEL)
            return _PLAIN + _deflate(alone, data)
        return _PRIMED + _deflate(self._primed.copy(), data)

    def unpack(self, packed: bytes) -> bytes:
        tag, body = packed[:1], packed[1:]
        try:
            if tag == _PRIMED and self._dictionary is not None:
                inflater = zlib.decompressobj(_WBITS, zdict=self._dictionary)
            elif tag == _PLAIN:
                inflater = zlib.decompressobj(_WBITS)
            else:
                raise PackError(f"unknown packing tag {tag!r}")
            data = inflater.decompress(body)
        except zlib.error as exc:
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

    def _prime(self, dictionary: bytes) -> None:
        self._dictionary = dictionary
        self._primed = zlib.compressobj(_LEVEL, zlib.DEFLATED, _WBITS, _MEM_LEVEL, zdict=dictionary)


def _deflate(compressor: zlib._Compress, data: bytes) -> bytes:
    return compressor.compress(data) + compressor.flush()
