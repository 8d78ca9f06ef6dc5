"""What the agent's session holds per object, and the messages built from it, without I/O.

:class:`SessionState` is the base of the session's parts (see protocol.agent): the strategies,
namespace rules and write policy it was made with, the compact record of every synced object
(its checksum by object version, the shadow the backend last received, or the checksum last
sent whole), the choice of checksum algorithm for the link, and how a message carrying an object
is made from those: a whole PutObject, or a PatchObject against the shadow.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import orjson

from clustersync.model import Kind, ObjectRef
from clustersync.protocol.agent_types import (
    Listed,
    Strategy,
    WritePolicy,
    checksum_of,
    object_version,
    precomputed_checksum,
    ref_of,
    reply_fields,
)
from clustersync.protocol.cache_entry import Facts
from clustersync.protocol.checksum import canonical_checksum
from clustersync.protocol.checksum_cache import Entry
from clustersync.protocol.digest import digest_like, fast_digest, is_fast
from clustersync.protocol.mergepatch import apply_patch, create_patch, is_noop_patch
from clustersync.protocol.messages import Message, PatchObject, PutObject
from clustersync.protocol.shaping import NamespaceRules, shape
from clustersync.protocol.synced import SyncedObjects


class SessionState:
    """The state every part of the agent session shares (see the module docstring)."""

    def __init__(
        self,
        strategies: Mapping[Kind, Strategy],
        rules: NamespaceRules,
        write_policy: WritePolicy | None = None,
    ) -> None:
        self.strategies = dict(strategies)
        self.rules = rules
        self.write_policy = write_policy or WritePolicy()
        # Which synced kinds are namespaced, as discovery says (the driver fills it in); a kind
        # missing here is not known yet, and the API server judges its writes.
        self.namespaced: dict[Kind, bool] = {}
        # One compact record per object holds the three below (see protocol.synced).
        self.synced = SyncedObjects()
        self.shadows = self.synced.shadows
        # Hashing dominates the agent's CPU: each object version is hashed once, whether it is
        # announced, requested, reconciled or re-announced after a reconnect.
        self._checksums = self.synced.checksums
        # Copy-strategy objects have no shadow; their last sent checksum is enough to skip a
        # put that would repeat itself (the watch event of an object the agent just wrote).
        self._sent = self.synced.sent
        # Which checksum this link uses: fast digests once a clustersync.v2 server agreed to
        # them (see use_fast_digests), kubescape's hash otherwise.
        self.fast_digests = False

    def share_shadows(
        self, kind: Kind, parse: Callable[[bytes], dict[str, Any]], *, shaped: bool = False
    ) -> None:
        """Let a patch-strategy object reconciled from a :class:`Cached` or :class:`Listed`
        item keep the cache entry as its shadow instead of a packed copy of what was sent:
        ``parse`` reads an entry back into the live object (raising ValueError if it cannot),
        and the shadow is its shape, the very JSON sent; with ``shaped``, ``parse`` returns that
        shape itself (an entry that holds the shaped JSON: protocol.cache_entry). Packing cost
        about a fifth of an initial sync; the price is a parse (and a shape) when the object
        next changes. ``parse`` must read every entry it was given for as long as the session
        holds it."""

        def read(entry: bytes) -> dict[str, Any]:
            return shape(kind, parse(entry))

        self.synced.share_from(kind, parse if shaped else read)

    def take_digest(self, ref: ObjectRef, facts: Facts) -> None:
        """Hold the fast digest a driver's cache entry has for an object version (see
        :meth:`Listed`): a change of that very version is then not hashed again."""
        if self.fast_digests and facts.shaped and facts.digest is not None:
            self._recorded(ref, facts)

    def use_fast_digests(self, on: bool) -> None:
        """Choose the algorithm for what the agent sends from now on (on every connect: the
        next server may not agree). Cached checksums of the other kind are never handed out:
        :meth:`_checksum` checks each one's kind, so a persisted cache stays usable. A last-sent
        checksum of the other kind never equals a new one, so it only costs one put."""
        self.fast_digests = on

    def _digest(self, live: Mapping[str, Any], shaped: Mapping[str, Any]) -> str:
        """The checksum of an object for this link: the one place the algorithm is chosen."""
        if self.fast_digests:
            return fast_digest(shaped)  # the storage annotation holds kubescape's hash: not used
        return checksum_of(live, shaped)

    def _known(self, ref: ObjectRef, live: Mapping[str, Any]) -> str | None:
        """The held checksum of this very version of the object (same uid and resourceVersion)
        by the link's algorithm, if any: then the object need not even be shaped."""
        cached = self._checksums.get(ref)
        if cached is None or is_fast(cached[1]) != self.fast_digests:
            return None
        version = object_version(live)
        return cached[1] if cached[0] == version and version != "/" else None

    def _checksum(self, ref: ObjectRef, live: Mapping[str, Any], shaped: Mapping[str, Any]) -> str:
        known = self._known(ref, live)
        if known is not None:
            return known
        checksum = self._digest(live, shaped)
        self._checksums[ref] = (object_version(live), checksum)
        return checksum

    def _canonical(self, ref: ObjectRef, live: Mapping[str, Any], shaped: Mapping[str, Any]) -> str:
        """The canonical hash, never the storage annotation: kubescape's agent hashes the object
        when it verifies a checksum or answers a GetObject, and its peers expect that there.
        With fast digests (never kubescape peers), the link's digest."""
        if not self.fast_digests and precomputed_checksum(live) is not None:
            return canonical_checksum(shaped)  # the cache holds the annotation for this one
        return self._checksum(ref, live, shaped)

    def _like(
        self, ref: ObjectRef, live: Mapping[str, Any], shaped: Mapping[str, Any], received: str
    ) -> str:
        """Our checksum of the object of the same kind as ``received`` (cached when that is the
        link's kind): a backend may hold checksums of either kind, e.g. from before an upgrade."""
        if is_fast(received) == self.fast_digests:
            return self._canonical(ref, live, shaped)
        return digest_like(received, shaped)

    def preload_checksums(self, entries: Iterable[Entry]) -> int:
        """Take back checksums saved by an earlier run (see protocol.checksum_cache). Each is
        used only for an object with its uid and resourceVersion; returns how many were taken."""
        taken = 0
        for entry in entries:
            if entry.ref.kind in self.strategies:
                ref = entry.ref
                ref = ObjectRef(ref.kind, sys.intern(ref.namespace), ref.name)
                self._checksums[ref] = (entry.version, entry.checksum)
                taken += 1
        return taken

    def checksum_agrees(self, kind: Kind, live: dict[str, Any]) -> bool:
        """Hash ``live`` afresh: does the checksum held for its version (if any) agree? The fresh
        one is kept. How a driver checks a sample of preloaded checksums before trusting them."""
        ref = ref_of(kind, live)
        held = self._checksums.pop(ref, None)
        shaped = shape(kind, live)
        if held is None or is_fast(held[1]) == self.fast_digests:
            fresh = self._checksum(ref, live, shaped)
            return held is None or held[1] == fresh
        # Saved under the other algorithm (the last server negotiated otherwise): checked by
        # its own algorithm, and kept, as the session keeps checksums of either kind.
        fresh = fast_digest(shaped) if is_fast(held[1]) else checksum_of(live, shaped)
        if fresh != held[1]:
            return False
        self._checksums[ref] = held
        return True

    def checksum_entries(self) -> Iterator[Entry]:
        """Every held checksum with its object version, for saving."""
        for ref, (version, checksum) in list(self._checksums.items()):
            yield Entry(ref, version, checksum)

    def forget_checksums(self) -> None:
        """Drop every held checksum (a preloaded file turned out wrong): they are hashed again."""
        for ref in list(self._checksums):
            self._checksums.pop(ref, None)

    def _put_or_patch(
        self,
        ref: ObjectRef,
        shaped: dict[str, Any],
        checksum: str,
        cause: Message | None,
        *,
        skip_noop: bool,
        canonical: str | None = None,  # the canonical hash of ``shaped``, when known
        entry: bytes | None = None,  # the cache entry ``shaped`` was made from (see Cached)
    ) -> PutObject | PatchObject | None:
        body = orjson.dumps(shaped)
        meta = reply_fields(cause)
        if self.strategies.get(ref.kind) is not Strategy.PATCH:
            if skip_noop and self._sent.get(ref) == checksum:
                return None
            self._sent[ref] = checksum
            return PutObject(ref=ref, checksum=checksum, object=body, **meta)
        try:
            base = self.shadows.decoded(ref)
        except KeyError:  # no shadow: the backend gets the whole object
            if entry is not None and self.synced.shares(ref.kind):
                self.shadows.share(ref, entry)
            else:
                self.shadows[ref] = body
            return PutObject(ref=ref, checksum=checksum, object=body, **meta)
        patch = create_patch(base, shaped)
        if skip_noop and is_noop_patch(patch):
            return None  # kubescape keeps the old shadow here too
        # The backend verifies the canonical hash of the patch result: a precomputed annotation
        # checksum cannot be verified, and a null value cannot travel in a merge patch. Without
        # a null anywhere (no ``null`` token in the JSON) the result is ``shaped`` itself, whose
        # canonical hash may be known already: a second hash per change would double the cost.
        if self.fast_digests:
            # Types count in the fast digest, and a patch leaves out numbers Go finds equal
            # (1 -> 1.0): the result may differ from ``shaped``. Applying costs a few µs.
            checksum = fast_digest(apply_patch(base, patch))
        elif canonical is not None and b"null" not in body:
            checksum = canonical
        else:
            checksum = canonical_checksum(apply_patch(base, patch))
        self.shadows[ref] = body
        return PatchObject(ref=ref, checksum=checksum, patch=orjson.dumps(patch), **meta)

    def _decisive(self, item: Listed) -> Facts | None:
        """The entry's facts if they suffice to reconcile the object without reading it."""
        facts = item.reader.facts(item.entry)
        if self.fast_digests and facts.shaped and facts.digest is not None:
            return facts
        return None

    def _filtered(self, item: Listed, facts: Facts) -> bool:
        """:func:`is_filtered` from the key and the facts (the namespace is the key's)."""
        namespace = item.namespace
        if namespace and namespace == self.rules.operator_namespace:
            return False
        return not self.rules.allows(namespace) or facts.controlled

    def _recorded(self, ref: ObjectRef, facts: Facts) -> str:
        """The entry's digest, held from now on for its object version (as :meth:`_checksum`)."""
        assert facts.digest is not None
        if self._known_version(ref, facts.version) != facts.digest:
            self._checksums[ref] = (facts.version, facts.digest)
        return facts.digest

    def _known_version(self, ref: ObjectRef, version: str) -> str | None:
        cached = self._checksums.get(ref)
        return cached[1] if cached is not None and cached[0] == version else None

    def _put_whole(
        self, ref: ObjectRef, body: bytes, checksum: str, meta: dict[str, Any], entry: bytes
    ) -> PutObject:
        """Send ``body``, the shaped JSON of a cache ``entry``, whole (the backend lacks it),
        with ``meta``, the depth and id of a reply to the message that asked (see _meta)."""
        if self.strategies.get(ref.kind) is not Strategy.PATCH:
            self.synced.sent_whole(ref, sent=checksum, shadow=None)
        elif self.synced.shares(ref.kind):
            self.synced.sent_whole(ref, sent=None, shadow=entry, shared=True)
        else:
            self.synced.sent_whole(ref, sent=None, shadow=body)
        return PutObject(ref=ref, checksum=checksum, object=body, **meta)
