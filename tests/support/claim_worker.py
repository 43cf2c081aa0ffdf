"""A delivery worker in its own process: claims due deliveries until none is left.

    python claim_worker.py URL INSTANCE

Claims batches with :meth:`AlertStore.claim_due` (``FOR UPDATE SKIP LOCKED``
on PostgreSQL), marks each sent, and prints the ids it claimed as one JSON
list on stdout.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from watcher.store import AlertStore


async def work(url: str, instance: str) -> list[int]:
    claimed: list[int] = []
    async with AlertStore(url, instance=instance) as store:
        while True:
            now = time.time_ns() // 1_000_000
            batch = await store.claim_due(now, limit=3, claim_ms=600_000)
            if not batch:
                if await store.next_due_ms() is None:
                    return claimed
                await asyncio.sleep(0.01)  # rows another worker holds: wait for them
                continue
            for delivery in batch:
                claimed.append(delivery.id)
                if not await store.mark_sent(delivery.id, now):
                    raise SystemExit(f"{instance}: could not finish delivery {delivery.id}")


if __name__ == "__main__":
    print(json.dumps(asyncio.run(work(sys.argv[1], sys.argv[2]))))
