"""``Sandbox``: the server lifecycle plus a direct, synchronous object API
with the same semantics (and the same RV counter) as the HTTP API."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from .app import Api
from .errors import SandboxError, invalid
from .kubeconfig import write_kubeconfig
from .listener import DualListener
from .patch import merge_patch as apply_merge_patch
from .resources import DEFAULT_RESOURCES, Registry, ResourceType
from .seed import iter_seed
from .selectors import Filter
from .state import Store, clone
from .tls import TlsMaterial, tls_material

T = TypeVar("T")
log = logging.getLogger(__name__)

INITIAL_NAMESPACES = ("default", "kube-system", "kube-public")


class Sandbox:
    """An in-process Kubernetes API server emulator."""

    def __init__(
        self,
        resources: Sequence[ResourceType] = DEFAULT_RESOURCES,
        *,
        history_limit: int = 10_000,
        token: str = "sandbox-token",
        tls: bool = True,
    ) -> None:
        self.registry = Registry(resources)
        self.store = Store(self.registry, history_limit)
        self.token = token
        self._api = Api(self.store, token)
        self._want_tls = tls
        self._tls: TlsMaterial | None = None
        self._runner: web.AppRunner | None = None
        self._listener: DualListener | None = None
        self._url: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        ns_rt = self.registry.find("", "v1", "namespaces")
        if ns_rt is not None:
            for ns in INITIAL_NAMESPACES:
                self.store.create(ns_rt, None, {"metadata": {"name": ns}})

    # ----- settings ---------------------------------------------------------

    @property
    def bookmark_interval(self) -> float:
        """Seconds between BOOKMARK events on watches that allow them."""
        return self._api.bookmark_interval

    @bookmark_interval.setter
    def bookmark_interval(self, seconds: float) -> None:
        self._api.bookmark_interval = seconds

    @property
    def watch_queue_limit(self) -> int:
        """Undelivered events a watcher may hold before it is ended with 410."""
        return self.store.watch_queue_limit

    @watch_queue_limit.setter
    def watch_queue_limit(self, limit: int) -> None:
        self.store.watch_queue_limit = limit

    def fail_requests(self, status: int, count: int) -> None:
        """Fault injection: answer the next ``count`` API requests (any verb, watches too,
        health probes excepted) with ``status`` (500, or 429 with ``Retry-After: 1``)."""
        self._api.failure_status = status
        self._api.failures_left = count

    @property
    def failures_left(self) -> int:
        """Injected failures not yet served."""
        return self._api.failures_left

    # ----- lifecycle --------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        if self._runner is not None:
            raise RuntimeError("sandbox already started")
        # handler_cancellation: a watch handler is cancelled as soon as its
        # client disconnects, so idle watchers do not linger.
        runner = web.AppRunner(
            self._api.make_app(),
            handle_signals=False,
            handler_cancellation=True,
            shutdown_timeout=1.0,
            access_log=None,
        )
        await runner.setup()
        assert runner.server is not None
        self._tls = tls_material() if self._want_tls else None
        if self._want_tls and self._tls is None:
            log.warning(
                "sandbox: openssl unavailable, serving plain HTTP only; kubectl "
                "will not send the token over HTTP and will get 401"
            )
        listener = DualListener(runner.server, self._tls.server_context() if self._tls else None)
        try:
            bound_port = await listener.start(host, port)
        except OSError:
            await runner.cleanup()
            raise
        self._runner, self._listener = runner, listener
        # Clients cannot dial a wildcard address (and the certificate names
        # loopback only), so advertise loopback when bound to all interfaces.
        client_host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
        url_host = f"[{client_host}]" if ":" in client_host else client_host
        self._url = f"http://{url_host}:{bound_port}"
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is None:
            return
        if self._listener is not None:
            await self._listener.stop()
            self._listener = None
        await self.drop_watches()
        await runner.cleanup()
        self._loop = None

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("sandbox not started")
        return self._url

    @property
    def kubeconfig_url(self) -> str:
        """The URL the kubeconfig names: the same port as ``url``, but https
        when TLS is available, because kubectl sends tokens only over TLS."""
        if self._tls is None:
            return self.url
        return "https://" + self.url.removeprefix("http://")

    @property
    def ca_pem(self) -> bytes | None:
        """PEM of the CA that signed the server certificate (None without TLS)."""
        return self._tls.ca_pem if self._tls else None

    def write_kubeconfig(self, path: str | Path) -> None:
        write_kubeconfig(path, self.kubeconfig_url, self.token, self.ca_pem)

    async def drop_watches(self) -> None:
        """End every open watch stream; clients see a clean end of stream."""
        watchers = self.store.close_watchers()
        if watchers:
            waits = [asyncio.ensure_future(w.finished.wait()) for w in watchers]
            _, pending = await asyncio.wait(waits, timeout=5.0)
            for task in pending:
                task.cancel()

    # ----- direct object API ----------------------------------------------

    def _call(self, fn: Callable[[], T]) -> T:
        """Run on the server's loop: watcher queues are not thread-safe, so a
        caller on another thread (e.g. a demo driver) is marshalled over."""
        loop = self._loop
        if loop is None or not loop.is_running() or threading.get_ident() == self._loop_thread:
            return fn()

        async def run() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), loop).result()

    def _type(self, group: str, version: str, resource: str) -> ResourceType:
        rt = self.registry.find(group, version, resource)
        if rt is None:
            gv = f"{group}/{version}" if group else version
            raise SandboxError(404, "NotFound", f"unknown resource {resource} in {gv}")
        return rt

    def _type_of(self, obj: dict[str, Any]) -> ResourceType:
        rt = self.registry.find_kind(str(obj.get("apiVersion", "")), str(obj.get("kind", "")))
        if rt is None:
            raise SandboxError(
                404,
                "NotFound",
                f'no matches for kind "{obj.get("kind")}" in version "{obj.get("apiVersion")}"',
            )
        return rt

    @staticmethod
    def _meta(obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj.get("metadata")
        return meta if isinstance(meta, dict) else {}

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        rt = self._type_of(obj)
        ns = self._meta(obj).get("namespace") or None
        return clone(self._call(lambda: self.store.create(rt, ns, obj)))

    def get(
        self, group: str, version: str, resource: str, namespace: str, name: str
    ) -> dict[str, Any] | None:
        rt = self._type(group, version, resource)
        obj = self._call(lambda: self.store.get(rt, namespace, name))
        return None if obj is None else clone(obj)

    def replace(self, obj: dict[str, Any]) -> dict[str, Any]:
        rt = self._type_of(obj)
        meta = self._meta(obj)
        name = meta.get("name")
        if not name:
            raise invalid(rt, "", "metadata.name: Required value")
        ns = meta.get("namespace") or None
        return clone(self._call(lambda: self.store.replace(rt, ns, str(name), obj)))

    def patch(  # noqa: PLR0917 - positional signature is the agreed public API
        self,
        group: str,
        version: str,
        resource: str,
        namespace: str,
        name: str,
        merge_patch: dict[str, Any],
    ) -> dict[str, Any]:
        rt = self._type(group, version, resource)
        ns = namespace or None
        return clone(
            self._call(
                lambda: self.store.update_with(
                    rt, ns, name, lambda cur: apply_merge_patch(cur, merge_patch)
                )
            )
        )

    def delete(
        self, group: str, version: str, resource: str, namespace: str, name: str
    ) -> dict[str, Any]:
        rt = self._type(group, version, resource)
        return clone(self._call(lambda: self.store.delete(rt, namespace or None, name)))

    def list(
        self, group: str, version: str, resource: str, namespace: str | None = None
    ) -> list[dict[str, Any]]:
        rt = self._type(group, version, resource)
        items = self._call(lambda: self.store.list_objects(rt, Filter(namespace or None)).items)
        return [clone(o) for o in items]

    def compact(self) -> None:
        """Forget retained history: watches/continues from older RVs get 410."""
        self._call(self.store.compact)

    @property
    def resource_version(self) -> int:
        return self.store.rv

    def last_change(self, group: str, version: str, resource: str) -> int:
        """The resourceVersion of the type's last change (0: none, or a type not served): a
        client watching the type has seen all of it once it reaches this version."""
        rt = self.registry.find(group, version, resource)
        return 0 if rt is None else self.store.last_change.get(rt, 0)

    def load(self, objects: Iterable[dict[str, Any]]) -> int:
        """Create seed objects: namespaces first, missing namespaces created
        on the fly, already-existing namespaces skipped. Returns the count.

        A sequence is reordered namespaces first; an iterator (a streamed seed file) is
        created in its order, and a Namespace it lists after objects in it replaces the one
        made for them on the fly."""
        ns_rt = self.registry.find("", "v1", "namespaces")
        if isinstance(objects, Sequence):
            objects = sorted(objects, key=lambda o: o.get("kind") != "Namespace")
        made_on_the_fly: set[str] = set()
        count = 0
        for obj in objects:
            rt = self._type_of(obj)
            meta = self._meta(obj)
            if rt == ns_rt:
                name = str(meta.get("name", ""))
                if name in made_on_the_fly:
                    made_on_the_fly.discard(name)
                    self._call(partial(self.store.replace, rt, None, name, obj))
                    count += 1
                    continue
                if self.store.get_raw(rt, "", name) is not None:
                    continue
            ns = meta.get("namespace")
            if rt.namespaced and ns_rt is not None and ns and not self.store.get_raw(ns_rt, "", ns):
                self.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
                made_on_the_fly.add(ns)
            # The store keeps its own encoded copy; no clone of the result is needed here.
            self._call(partial(self.store.create, rt, ns or None, obj))
            count += 1
        return count


async def run_sandbox(
    port: int, kubeconfig: str, seed: str | None = None, host: str = "127.0.0.1"
) -> None:
    """Serve until cancelled (the demo / CLI entry point)."""
    objects = iter_seed(seed) if seed else iter(())
    sandbox = Sandbox()
    await sandbox.start(host, port)
    try:
        sandbox.load(objects)
        sandbox.write_kubeconfig(kubeconfig)
        print(f"sandbox serving on {sandbox.url}, kubeconfig {kubeconfig}", flush=True)
        await asyncio.Event().wait()
    finally:
        await sandbox.stop()
