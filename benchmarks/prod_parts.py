"""The processes of the production-topology benchmark: each part of the deployment on its own.

PostgreSQL runs with fsync and synchronous commit on, NATS JetStream with ``sync_interval:
always`` (every message on disk before it is acknowledged), and every clustersync part is a
``python -m clustersync`` process, as an operator would run them.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from tests.servers import free_port, nats_server_binary

START_TIMEOUT = 120.0


def wait_for(condition: Callable[[], bool], what: str, timeout: float = START_TIMEOUT) -> None:
    """Poll ``condition`` (with a growing pause) until it holds; raise after ``timeout``."""
    deadline = time.monotonic() + timeout
    pause = 0.005
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f}s")
        time.sleep(pause)
        pause = min(pause * 1.5, 0.1)


def rss_kib(pid: int) -> tuple[int, int]:
    """(current, peak) resident set size of a process, in KiB, from /proc."""
    values = {"VmRSS": 0, "VmHWM": 0}
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name in values:
                values[name] = int(rest.split()[0])
    return values["VmRSS"], values["VmHWM"]


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time used by processes together (a process already gone counts 0)."""
    ticks = 0
    for pid in pids:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def pss_kib(pids: list[int]) -> int:
    """Proportional set size of processes together, in KiB: shared memory (PostgreSQL's
    buffers) is split among its sharers instead of counted once per process."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as f:
            for line in f:
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
                    break
    return total


def process_tree(root: int) -> list[int]:
    """``root`` and every process descended from it (PostgreSQL's postmaster and backends)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            parents.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(parents.get(pid, []))
    return tree


@dataclass
class Part:
    """One running process with its log file."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def check(self) -> None:
        if not self.alive():
            tail = self.log.read_text(errors="replace").splitlines()[-20:]
            raise RuntimeError(f"{self.name} exited ({self.proc.returncode}):\n" + "\n".join(tail))

    def stop(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class Parts:
    workdir: Path
    running: list[Part] = field(default_factory=list)

    def start(self, name: str, argv: list[str]) -> Part:
        log = self.workdir / f"{name}.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                    cwd=self.workdir)
        part = Part(name, proc, log)
        self.running.append(part)
        return part

    def clustersync(self, name: str, *args: str) -> Part:
        return self.start(name, [sys.executable, "-m", "clustersync", "--log-level", "WARNING",
                                 *args])

    def stop_all(self) -> None:
        for part in reversed(self.running):
            part.stop()
        self.running.clear()


@contextlib.contextmanager
def parts(workdir: Path) -> Iterator[Parts]:
    group = Parts(workdir)
    try:
        yield group
    finally:
        group.stop_all()


def start_durable_nats(group: Parts) -> tuple[Part, str, str]:
    """nats-server with JetStream flushing every message to disk before acknowledging it: the
    process, its client URL and its monitoring URL."""
    port, monitor = free_port(), free_port()
    store = group.workdir / "jetstream"
    conf = group.workdir / "nats.conf"
    conf.write_text(
        f'listen: "127.0.0.1:{port}"\nhttp: "127.0.0.1:{monitor}"\n'
        f'jetstream {{\n  store_dir: "{store}"\n  sync_interval: always\n}}\n'
    )
    part = group.start("nats", [str(nats_server_binary()), "-c", str(conf)])

    def healthy() -> bool:
        part.check()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{monitor}/healthz", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    wait_for(healthy, "nats-server")
    return part, f"nats://127.0.0.1:{port}", f"http://127.0.0.1:{monitor}"


def bus_backlog(monitor: str) -> int:
    """Messages JetStream holds for consumers: not yet delivered plus delivered and unacked."""
    url = f"{monitor}/jsz?accounts=true&streams=true&consumers=true"
    with urllib.request.urlopen(url, timeout=5) as response:
        doc = json.loads(response.read())

    def pending(node: Any) -> int:
        if isinstance(node, dict):
            own = int(node.get("num_pending", 0)) + int(node.get("num_ack_pending", 0))
            return own + sum(pending(v) for v in node.values())
        if isinstance(node, list):
            return sum(pending(v) for v in node)
        return 0

    return pending(doc)


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@dataclass(frozen=True)
class KubeTarget:
    """Where and how to reach the sandbox API server from the benchmark driver."""

    server: str
    token: str
    ssl: ssl.SSLContext | bool

    @classmethod
    def from_kubeconfig(cls, path: Path) -> KubeTarget:
        doc: dict[str, Any] = yaml.safe_load(path.read_text())
        cluster = doc["clusters"][0]["cluster"]
        token = doc["users"][0]["user"]["token"]
        ca = cluster.get("certificate-authority-data")
        context: ssl.SSLContext | bool = False
        if ca:
            context = ssl.create_default_context(cadata=base64.b64decode(ca).decode())
        return cls(cluster["server"].rstrip("/"), token, context)



def migrate_database(group: Parts, db: str) -> None:
    """Run ``clustersync db migrate`` against ``db`` as its own process, and wait for it."""
    migrate = group.clustersync("migrate", "db", "migrate", "--db", db)
    wait_for(lambda: not migrate.alive(), "db migrate")
    if migrate.proc.returncode:
        migrate.check()
