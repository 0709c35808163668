"""SWIM/Lifeguard membership, sans-IO: see docs/MEMBERSHIP.md."""

from gossipnet.membership.codec import BadBody, Update
from gossipnet.membership.config import MembershipConfig, retransmit_limit, suspicion_timeout
from gossipnet.membership.core import Membership
from gossipnet.membership.types import (Addr, EventKind, MemberEvent, MemberView, Outgoing,
                                        Reject, State)

__all__ = [
    "Addr", "BadBody", "EventKind", "MemberEvent", "MemberView", "Membership",
    "MembershipConfig", "Outgoing", "Reject", "State", "Update", "retransmit_limit",
    "suspicion_timeout",
]
