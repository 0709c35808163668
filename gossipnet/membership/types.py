"""Plain values the membership state machine hands to its caller."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import Any

from gossipnet.wire.types import MsgType

Addr = tuple[str, int]


@dataclass(frozen=True)
class Outgoing:
    """One datagram to send: the caller wraps ``body`` in a signed envelope."""

    addr: Addr
    msg_type: MsgType
    body: dict[str, Any]
    # The node it is for: the envelope names it, so no other node accepts a replay.
    # None only for a join SYNC to a seed address whose owner is not known yet.
    to: str | None = None


class State(IntEnum):
    """A member's state; the numbers travel in SYNC bodies."""

    ALIVE = 0
    SUSPECT = 1
    DEAD = 2
    LEFT = 3

    @property
    def label(self) -> str:
        return self.name.lower()


class EventKind(str, Enum):
    """What the node may want to react to (log it, forget a peer's history, ...)."""

    JOINED = "joined"
    SUSPECT = "suspect"
    DEAD = "dead"
    LEFT = "left"
    RECOVERED = "recovered"  # suspect/dead/left -> alive again
    UPDATED = "updated"  # alive, but new address or meta


class Reject(str, Enum):
    """Why an incoming body was refused; each reason is counted."""

    MALFORMED = "malformed"  # not the structure the type needs
    WRONG_TARGET = "wrong_target"  # a PING meant for another node id
    UNEXPECTED = "unexpected"  # an ACK/NACK nobody asked for (late or forged)
    LEAVING = "leaving"  # we are leaving: no more protocol work


@dataclass(frozen=True)
class MemberView:
    """A read-only row of the membership table."""

    node_id: str
    addr: Addr
    state: State
    incarnation: int
    meta: dict[str, Any]
    since: float  # when the state last changed (the caller's clock)


@dataclass(frozen=True)
class MemberEvent:
    kind: EventKind
    node_id: str
    incarnation: int
    at: float


@dataclass
class Member:
    """Mutable table entry (internal)."""

    node_id: str
    addr: Addr
    incarnation: int
    meta: dict[str, Any]
    state: State = State.ALIVE
    since: float = 0.0
    suspicion: Any = None  # timers.Suspicion while SUSPECT

    def view(self) -> MemberView:
        return MemberView(self.node_id, self.addr, self.state, self.incarnation,
                          dict(self.meta), self.since)
