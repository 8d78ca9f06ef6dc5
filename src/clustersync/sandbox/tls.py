"""Self-signed TLS material for the sandbox, made with the ``openssl`` CLI.

Why TLS at all: client-go (so kubectl) only sends a kubeconfig's bearer
token when the server URL is https ("only try to read the auth information
if we are secure" in clientcmd). Without TLS kubectl would always get 401.
The Python ``cryptography`` package is not a dependency, so the CLI is used;
without it the sandbox serves plain HTTP only.
"""

from __future__ import annotations

import atexit
import shutil
import ssl
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

_cached: TlsMaterial | None = None


@dataclass(frozen=True)
class TlsMaterial:
    ca_pem: bytes  # goes into the kubeconfig as certificate-authority-data
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert_file, self.key_file)
        ctx.set_alpn_protocols(["http/1.1"])  # keep Go clients off HTTP/2
        return ctx


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def tls_material() -> TlsMaterial | None:
    """A CA plus a server certificate for 127.0.0.1/::1/localhost, generated
    once per process (a few milliseconds with EC keys)."""
    global _cached  # noqa: PLW0603 - a per-process cache is the point
    if _cached is not None:
        return _cached
    if shutil.which("openssl") is None:
        return None
    work = Path(tempfile.mkdtemp(prefix="clustersync-sandbox-tls-"))
    atexit.register(shutil.rmtree, work, True)
    curve = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    try:
        _openssl(
            "req",
            "-x509",
            *curve,
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "3650",
            "-subj",
            "/CN=clustersync-sandbox-ca",
            cwd=work,
        )
        _openssl(
            "req",
            "-new",
            *curve,
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=clustersync-sandbox",
            cwd=work,
        )
        (work / "ext.cnf").write_text(
            "basicConstraints=CA:FALSE\n"
            "keyUsage=digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth\n"
            "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost\n"
        )
        _openssl(
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "3650",
            "-extfile",
            "ext.cnf",
            cwd=work,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    _cached = TlsMaterial((work / "ca.pem").read_bytes(), work / "server.pem", work / "server.key")
    return _cached
