"""What one up message costs the ingester's 16 partition durables on a kubescape-layout Pulsar
topic: each durable reads every message and must tell whether it is its own. Deciding from the
message properties is compared with decoding the payload (what a durable would otherwise do),
for a pod-sized and an SBOM-sized object. No broker needed: this is the client-side work.

    .venv/bin/python -m benchmarks.pulsar_routing
"""

from __future__ import annotations

import time

from clustersync.adapters.bus.pulsar_layout import KubescapeLayout
from clustersync.model import Kind, ObjectRef
from clustersync.protocol.envelope import (
    UP_PARTITIONS,
    Envelope,
    encode_envelope,
    partition_of,
    up_partition_filter,
    up_subject,
)
from clustersync.protocol.messages import PutObject
from clustersync.protocol.pulsar_codec import SERVER_PRODUCER_KEY

SIZES = ((20_000, 200), (6_000_000, 3))  # object bytes, repetitions


def run() -> None:
    layout = KubescapeLayout("persistent://public/default/synchronizer")
    filters = [up_partition_filter(p) for p in range(UP_PARTITIONS)]
    print(f"Pulsar routing of one up message across {UP_PARTITIONS} partition durables")
    for size, reps in SIZES:
        body = b'{"kind":"SBOMSyft","metadata":{"name":"s"},"spec":{"x":"' + b"y" * size + b'"}}'
        ref = ObjectRef(
            Kind("spdx.softwarecomposition.kubescape.io", "v1beta1", "sbomsyfts"), "default", "s"
        )
        msg = PutObject(ref=ref, checksum="c", object=body)
        data = encode_envelope(Envelope("acct", "cluster", msg))
        (out,) = layout.outgoing(up_subject("acct", "cluster", partition_of(msg)), data)

        start = time.perf_counter()
        for _ in range(reps):
            for subject_filter in filters:
                layout.may_match(subject_filter, out.properties, SERVER_PRODUCER_KEY, layout.topic)
        by_properties = (time.perf_counter() - start) / reps
        start = time.perf_counter()
        for _ in range(reps):
            for _subject_filter in filters:
                layout.incoming(out.payload, out.properties, SERVER_PRODUCER_KEY, layout.topic)
        by_decoding = (time.perf_counter() - start) / reps
        print(
            f"  {size:>9,} B object: from the properties {by_properties * 1e3:8.3f} ms"
            f"   | decoding in every durable {by_decoding * 1e3:8.1f} ms"
        )


if __name__ == "__main__":
    run()
