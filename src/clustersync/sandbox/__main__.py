"""``python -m clustersync.sandbox --port 8443 --kubeconfig /tmp/kc [--seed f.yaml]``"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys

from .seed import SeedError
from .server import run_sandbox


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clustersync.sandbox")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--kubeconfig", required=True, help="where to write the kubeconfig")
    parser.add_argument("--seed", help="YAML/JSON file with objects to create at start")
    args = parser.parse_args(argv)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(run_sandbox(args.port, args.kubeconfig, args.seed, args.host))
    except SeedError as exc:
        print(f"sandbox: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
