"""Splitting a watch stream into lines without a line-length crash.

aiohttp's ``readline`` raises ``LineTooLong`` past its buffer limit and leaves the stream
unusable, so one oversized object would end every watch of its kind. Here a line longer than the
limit is consumed to its end and reported as :class:`Oversized`; the lines after it still arrive.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass

_HEAD = 4096  # bytes kept from an oversized line, to name the object in the log

_NAME = re.compile(rb'"name"\s*:\s*"([^"\\]{1,253})"')
_NAMESPACE = re.compile(rb'"namespace"\s*:\s*"([^"\\]{1,63})"')


@dataclass(frozen=True, slots=True)
class Oversized:
    size: int
    head: bytes

    def guessed_key(self) -> tuple[str, str]:
        """(namespace, name) read from the line's first bytes: good enough for a log line.

        Kubernetes writes ``metadata`` before ``spec`` and ``data``, so the first ``name`` and
        ``namespace`` keys are usually the object's own; they are never trusted for state.
        """
        name = _NAME.search(self.head)
        namespace = _NAMESPACE.search(self.head)
        return (
            namespace.group(1).decode(errors="replace") if namespace else "",
            name.group(1).decode(errors="replace") if name else "",
        )


async def split_lines(chunks: AsyncIterable[bytes], limit: int) -> AsyncIterator[bytes | Oversized]:
    """Each newline-terminated line (without the newline), or :class:`Oversized` in its place.

    A stream that ends inside a line was cut (the event will come again when the watch resumes),
    so that is a ``ValueError`` rather than a line.
    """
    line = bytearray()
    dropped = 0  # > 0 while consuming the rest of an oversized line
    head = b""
    async for chunk in chunks:
        start = 0
        while start < len(chunk):
            end = chunk.find(b"\n", start)
            stop = len(chunk) if end < 0 else end
            if dropped:
                dropped += stop - start
            else:
                line += chunk[start:stop]
                if len(line) > limit:
                    dropped, head = len(line), bytes(line[:_HEAD])
                    line.clear()
            if end < 0:
                break
            if dropped:
                yield Oversized(dropped, head)
                dropped = 0
            else:
                yield bytes(line)
                line.clear()
            start = end + 1
    if dropped or line.strip():
        raise ValueError(f"the stream ended inside an event of {dropped or len(line)} bytes")
