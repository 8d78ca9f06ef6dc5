"""The dashboard in a real browser against a real backend, sandbox cluster and agent.

Headless Chromium logs in with the admin token, watches a cluster connect and its object count
rise while the backend takes in its initial sync (live, without a reload), browses to an object,
and replays a dead letter, screenshotting every page it visits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson

try:  # `python -m pytest` from the repo root
    from tests.runtime.harness import (
        ACCOUNT,
        ADMIN_TOKEN,
        CLUSTER_A,
        CONFIGMAPS,
        RULES,
        World,
        configmap,
        eventually,
    )
    from tests.ui.browser import Artefacts
except ImportError:  # plain `pytest`
    from runtime.harness import (  # type: ignore[no-redef]
        ACCOUNT,
        ADMIN_TOKEN,
        CLUSTER_A,
        CONFIGMAPS,
        RULES,
        World,
        configmap,
        eventually,
    )
    from ui.browser import Artefacts  # type: ignore[no-redef]

from clustersync.adapters.bus import Bus, Delivery, Handler
from clustersync.adapters.bus.memory import MemoryBus
from clustersync.model import ObjectRef
from clustersync.protocol.envelope import Envelope, encode_envelope, write_subject
from clustersync.protocol.messages import PutObject, new_msg_id


class GatedIngest:
    """The bus as the backend sees it, with the ingester's intake of agent messages held shut
    until :meth:`open`: the agent connects and sends, but nothing is stored yet."""

    def __init__(self, bus: MemoryBus) -> None:
        self._bus = bus
        self.opened = asyncio.Event()

    def open(self) -> None:
        self.opened.set()

    async def publish(self, subject: str, data: bytes) -> int:
        return await self._bus.publish(subject, data)

    async def subscribe(
        self, subject_filter: str, durable: str, handler: Handler, *, in_flight: int = 1,
        idle_expiry: float | None = None,
    ) -> Any:
        if not durable.startswith("ingester-up-"):
            return await self._bus.subscribe(subject_filter, durable, handler,
                                             idle_expiry=idle_expiry)

        async def held(delivery: Delivery) -> None:
            await self.opened.wait()
            await handler(delivery)

        return await self._bus.subscribe(subject_filter, durable, held, in_flight=in_flight)

    async def close(self) -> None:
        await self._bus.close()


async def log_in(page: Any, base: str, token: str = ADMIN_TOKEN) -> None:
    await page.goto(f"{base}/ui")
    await page.fill("#token", token)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{base}/ui/")


async def text_of(page: Any, selector: str) -> str:
    return str(await page.locator(selector).inner_text())


async def wait_text(page: Any, selector: str, predicate: Callable[[str], bool],
                    what: str) -> str:
    async def check() -> str | None:
        text = await text_of(page, selector)
        return text if predicate(text) else None

    return str(await eventually(check, timeout=20, what=what, interval=0.1))


SEED = [
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}},
    *[configmap(f"settings-{i:02d}", currency="EUR") for i in range(40)],
    # A value an attacker controls, shown in the YAML: must appear as text, never run.
    configmap("evil", payload="<script>document.title='pwned'</script><b id=bold>x</b>"),
]


def synced_in_sandbox(world: World) -> int:
    """What the store must end up holding, counted in the sandbox: every namespace object
    (the sandbox adds its default ones; exclusion applies to what lies inside a namespace) and
    the ConfigMaps outside the excluded namespaces."""
    sandbox = world.clusters[CLUSTER_A].sandbox
    namespaces = sandbox.list("", "v1", "namespaces")
    configmaps = [c for c in sandbox.list("", "v1", "configmaps")
                  if c["metadata"]["namespace"] not in RULES.exclude]
    return len(namespaces) + len(configmaps)


async def test_login_connect_initial_sync_browse_and_replay(
    tmp_path: Any, page: Any, artefacts: Artefacts
) -> None:
    gate: GatedIngest | None = None

    def gated(bus: MemoryBus) -> Bus:
        nonlocal gate
        gate = GatedIngest(bus)
        return gate  # type: ignore[return-value]

    world = World(tmp_path, bus_view=gated)
    await world.start()
    try:
        assert gate is not None
        await _scenario(world, gate, page, artefacts)
    finally:
        await world.stop()


async def _scenario(world: World, gate: GatedIngest, page: Any, artefacts: Artefacts) -> None:
    base = world.backend.url
    await world.add_cluster(CLUSTER_A, SEED)
    row = f'#fleet tr[data-cluster="{ACCOUNT}/{CLUSTER_A}"]'

    # Logged out, every page leads to the login form.
    await page.goto(f"{base}/ui/deadletters")
    assert page.url == f"{base}/ui/login"
    await artefacts.shoot(page, "01-login")
    await log_in(page, base)

    # The cluster is named by a token but no agent is connected yet.
    await wait_text(page, f"{row} td.state", lambda t: t == "disconnected", "disconnected")
    await page.evaluate("window.sameDocument = true")  # gone if the page were reloaded

    world.start_agent(CLUSTER_A)
    await wait_text(page, f"{row} td.state", lambda t: t == "connected", "the cluster to connect")
    assert await text_of(page, f"{row} td.objects") == "0"  # the ingester is held shut
    await artefacts.shoot(page, "02-fleet-connected")

    # The agent reports its initial sync (every few seconds while it runs): a bar per kind,
    # nothing stored yet against everything the agent listed.
    bar = f'{row} td.sync .progress[data-kind="{CONFIGMAPS}"] progress'
    await page.wait_for_selector(bar, timeout=30_000)
    listed = len(world.clusters[CLUSTER_A].sandbox.list("", "v1", "configmaps"))
    assert await page.get_attribute(bar, "max") == str(listed)
    assert await page.get_attribute(bar, "value") == "0"
    assert f"0 / {listed}" in await text_of(page, f"{row} td.sync")
    await artefacts.shoot(page, "02b-fleet-initial-sync")

    gate.open()  # the initial sync reaches the store; the count rises live
    expected = synced_in_sandbox(world)
    seen: set[int] = set()

    async def counted() -> bool:
        seen.add(int(await text_of(page, f"{row} td.objects")))
        return max(seen) == expected

    await eventually(counted, timeout=30, what=f"{expected} objects on the fleet page")
    assert min(seen) < expected  # it rose while the page watched
    assert await page.evaluate("window.sameDocument") is True  # live, without a reload
    assert "configmaps" in await text_of(page, f"{row} td.kinds")
    # Done: the agent's last report says so and the bars go away.
    await page.wait_for_selector(f"{row} td.sync progress", state="detached", timeout=30_000)
    await artefacts.shoot(page, "03-fleet-synced")

    # The cluster page: kinds with counts, then filter down to one object.
    await page.click(f"{row} a")
    await page.wait_for_selector("#kinds")
    assert f"{CONFIGMAPS}41" in (await text_of(page, "#kinds")).replace(" ", "").replace(
        "\n", ""
    )
    await artefacts.shoot(page, "04-cluster")
    await page.select_option("select[name=kind]", str(CONFIGMAPS))
    await page.fill("input[name=q]", "evil")
    await page.click("form.filters button[type=submit]")
    await page.wait_for_url("**q=evil**")
    names = await page.locator("#objects tbody tr td:nth-child(3)").all_inner_texts()
    assert names == ["evil"]
    await artefacts.shoot(page, "05-cluster-filtered")

    # The object page: YAML, checksum and resource version as the store holds them.
    await page.click("#objects a")
    await page.wait_for_selector("#yaml")
    stored = await world.row(CLUSTER_A, CONFIGMAPS, "shop", "evil")
    assert stored is not None
    facts = await text_of(page, "#facts")
    assert stored.checksum in facts
    assert stored.resource_version in facts
    yaml_text = await text_of(page, "#yaml")
    assert "<script>document.title='pwned'</script>" in yaml_text  # shown as text
    assert await page.locator("#bold").count() == 0  # not parsed as HTML
    assert await page.title() != "pwned"
    await artefacts.shoot(page, "06-object")

    # A dead letter: a backend write parked on its way down. Replaying it brings the object
    # into the cluster.
    wanted = configmap("from-dead-letter", "shop", replayed="yes")
    message = PutObject(ref=ObjectRef(CONFIGMAPS, "shop", "from-dead-letter"), checksum="",
                        object=orjson.dumps(wanted), depth=0, msg_id=new_msg_id())
    letter_id = await world.store.park(
        write_subject(ACCOUNT, CLUSTER_A),
        encode_envelope(Envelope(ACCOUNT, CLUSTER_A, message)),
        "test: parked on purpose",
    )
    await page.click("text=Dead letters")
    await page.wait_for_selector("#deadletters")
    assert "test: parked on purpose" in await text_of(page, "#deadletters")
    await artefacts.shoot(page, "07-dead-letters")
    await page.click(f'#deadletters a[href="/ui/deadletters/{letter_id}"]')
    await page.wait_for_selector("#message")
    assert "from-dead-letter" in await text_of(page, "#message")
    await artefacts.shoot(page, "08-dead-letter")

    page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await page.click("button:has-text('Replay')")
    await page.wait_for_url("**/ui/deadletters?done=replayed")
    assert "Replayed" in await text_of(page, ".flash")
    assert await world.store.dead_letter(letter_id) is None
    await eventually(lambda: world.clusters[CLUSTER_A].get(CONFIGMAPS, "shop",
                                                           "from-dead-letter"),
                     timeout=20, what="the replayed write to reach the cluster")
    await artefacts.shoot(page, "09-replayed")

    # A backend write through the API: the audit page shows its outcome once the agent
    # applied it, and the object's page lists it in its history.
    accepted = await world.api_put(CLUSTER_A, configmap("from-api", "shop", written="yes"))
    write_id = accepted["id"]

    async def audited() -> bool:
        await page.goto(f"{base}/ui/writes?cluster={CLUSTER_A}")
        # The page is not live: reload until this write's row shows its outcome.
        return "applied" in await text_of(page, f"#writes tr:has-text('{write_id}')")

    await eventually(audited, timeout=20, what="the write's outcome on the audit page")
    # The fleet counts the cluster's writes by outcome: the replayed one (the ingester records
    # a write that reaches it without a record) and this one.
    await page.goto(f"{base}/ui/")
    await wait_text(page, f"{row} td.writes", lambda t: t == "2 applied", "2 applied writes")
    await page.click(f"{row} td.writes a")
    await page.wait_for_selector("#writes")
    audit = await text_of(page, "#writes")
    assert write_id in audit and "from-api" in audit
    await artefacts.shoot(page, "10-writes")
    await page.click("#writes a:has-text('shop/from-api')")
    await page.wait_for_selector("#yaml")
    history = await page.locator("#writes tbody tr").all_inner_texts()
    assert len(history) == 1 and "applied" in history[0] and write_id in history[0]
    assert "written: 'yes'" in await text_of(page, "#yaml") or "written: yes" in await text_of(
        page, "#yaml")
    await artefacts.shoot(page, "11-object-history")

    # Logging out ends the session: the next page asks to log in again.
    await page.click("header button:has-text('Log out')")
    await page.wait_for_url(f"{base}/ui/login")
    await page.goto(f"{base}/ui/")
    assert page.url == f"{base}/ui/login"
    assert len(artefacts.taken) == 12


