"""Message types on the UDP plane, shared by wire/, membership.py and gossip.py.

Numbers are part of the protocol: never reuse or renumber one.
"""

from enum import IntEnum


class MsgType(IntEnum):
    # Membership (SWIM with Lifeguard); bodies defined in membership.py.
    PING = 1  # direct probe; piggy-backs membership updates
    ACK = 2  # answer to PING or to an indirect probe; piggy-backs updates
    PING_REQ = 3  # ask a peer to probe a target for us (indirect probe)
    NACK = 4  # Lifeguard: the indirect prober got no ack from the target
    SYNC = 5  # full state push (push-pull anti-entropy)
    SYNC_REPLY = 6  # the pull half of a full sync
    LEAVE = 7  # graceful goodbye
    GOSSIP = 8  # one-way: piggy-backed updates only, no answer (memberlist's gossip())
    # Learning plane; body defined in gossip.py.
    MANIFEST = 16  # "I have this snapshot; pull it over HTTP if you want it"
