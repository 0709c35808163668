"""Piggy-back queue: memberlist's TransmitLimitedQueue, one rumour per node.

A newer rumour about a node replaces the older one; each rumour rides on at
most ``limit`` messages, least-sent first, so fresh news spreads first and
old news fades (SWIM's infection-style dissemination).
"""

from __future__ import annotations

from typing import Any

from gossipnet.membership.codec import Update, encode_update, fit_list, packed_size


class Broadcasts:
    def __init__(self) -> None:
        # node_id -> [transmits, order, packed_size, encoded update]
        self._queue: dict[str, list[Any]] = {}
        self._order = 0

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, update: Update) -> None:
        body = encode_update(update)
        self._order += 1
        self._queue[update.node_id] = [0, self._order, packed_size(body), body]

    def about(self, node_id: str) -> dict[str, Any] | None:
        item = self._queue.get(node_id)
        return item[3] if item else None

    def take(self, base: dict[str, Any], max_bytes: int, limit: int,
             first: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Updates for ``base["u"]`` within ``max_bytes``; counts one transmit each.

        ``first`` (Lifeguard's buddy system: tell a suspect it is suspected) goes
        in front when it fits, whether or not it is still queued.
        """
        if first is not None:
            queued = self._queue.get(first["n"])
            if queued is not None and queued[3] == first:
                first = queued[3]  # the same rumour: send it once and count the transmit
        ranked = sorted(self._queue.values(), key=lambda item: (item[0], -item[1]))
        candidates = [(item[2], item[3]) for item in ranked if item[3] is not first]
        if first is not None:
            candidates.insert(0, (packed_size(first), first))
        chosen = fit_list(base, "u", candidates, max_bytes)
        for body in chosen:
            item = self._queue.get(body["n"])
            if item is not None and item[3] is body:
                item[0] += 1
                if item[0] >= limit:
                    del self._queue[body["n"]]
        return chosen
