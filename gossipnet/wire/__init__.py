"""The wire protocol, sans-IO: signed envelopes, bounded bodies, replay windows, blobs.

``Sealer.seal`` makes an envelope; ``Receiver.open`` checks one and returns
``Accepted`` or ``Rejected`` (with a counted ``Reason``). See docs/WIRE.md.
"""

from gossipnet.wire.body import BodyError, BodyLimits, BodyTooLarge, decode_body, encode_body, validate
from gossipnet.wire.envelope import MAX_DATAGRAM, MAX_UDP_BODY, Sealer, WireLimits
from gossipnet.wire.receiver import Accepted, Reason, ReceiverConfig, Receiver, Rejected
from gossipnet.wire.types import MsgType

__all__ = [
    "MAX_DATAGRAM", "MAX_UDP_BODY", "Accepted", "BodyError", "BodyLimits", "BodyTooLarge",
    "MsgType", "Reason", "Receiver", "ReceiverConfig", "Rejected", "Sealer", "WireLimits",
    "decode_body", "encode_body", "validate",
]
