"""`make bench`: run every benchmark once and write docs/benchmarks.md."""

from __future__ import annotations

import json
import platform
import sys
from datetime import UTC, datetime

from bench import operator_scale, worker_queue
from tests.support.cluster import ROOT

DOC = ROOT / "docs" / "benchmarks.md"


def main() -> None:
    scale = operator_scale.run()
    print(json.dumps(scale, indent=2))
    queue = worker_queue.run()
    print(json.dumps(queue, indent=2))
    sessions, per_session = queue["simulator_sessions"], queue["simulator_mb_per_session"]
    neonize_n, neonize_total = queue["neonize_sessions"], queue["neonize_total_mb"]
    neonize_each = queue["neonize_mb_per_session"]
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(f"""# Benchmarks

Produced by `make bench` (`python -m bench`) on {when}, {platform.machine()},
Python {sys.version.split()[0]}, on this project's 2-core machine. Every figure
below comes from that one run; rerun the command to refresh this page.

## Operator at scale (issue 3)

{scale["shards"]:,} `WhatsAppShard`s of 50 slots ({scale["slots"]:,} slots) created with
`kubectl create` in one namespace of a private loopback cluster (etcd,
kube-apiserver, controller-manager, scheduler, kwok), one `wasp operator`.
Done means every shard has its StatefulSet and a `status.phase`.

| measure | value | goal |
| --- | --- | --- |
| cluster start, cached binaries | {scale["cluster_start_s"]} s | < 30 s |
| apiserver only: store the same 1,000 shards, no operator | {scale["store_only_s"]} s | |
| `kubectl create` of the 1,000 shards with the operator running | {scale["kubectl_create_s"]} s | |
| until every shard has its StatefulSet and status | {scale["all_reconciled_s"]} s | < 120 s |
| ratio to storing only | {scale["ratio_to_store_only"]}x | |
| operator peak resident memory (VmHWM) | {scale["operator_peak_rss_mb"]} MB | < 250 MB |

The operator shares two cores with the whole control plane, which also
creates 1,000 pods, 1,000 claims and volumes while this runs.

## Worker: durable queue and memory per session (issue 4, in part)

{queue["messages"]:,} messages, one after another, on the same disk
(`.cache/`), SQLite in WAL mode with `synchronous=FULL`, one commit per message.
The durable enqueue also checks the idempotency key, fixes the WhatsApp message
id and hops to the queue's own thread.

| measure | value |
| --- | --- |
| raw SQLite insert, one commit each | {queue["raw_insert_per_s"]:,} messages/s |
| worker durable enqueue (`OutboundQueue.enqueue`) | {queue["durable_enqueue_per_s"]:,} messages/s |
| ratio durable / raw | {queue["enqueue_to_raw_ratio"]} |
| `wasp worker` resident memory, idle | {queue["worker_base_rss_mb"]} MB |
| simulator: extra memory per session ({sessions} sessions) | {per_session} MB |

| neonize: extra memory for {neonize_n} sessions, cells included | {neonize_total} MB |
| neonize: per session, cells included (goal < 5 MB; WAHA ~50 MB) | {neonize_each} MB |

Neonize figures are offline: every session has made one failed connect (store
created, Go client state held) in cells of 25 sessions; about 60 MB of each
cell is neonize's import. A logged-in session will cost more: measure that in
staging.
""")
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
