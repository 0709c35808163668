"""gossipnet: a peer-to-peer training daemon for the machines of a LAN."""

__version__ = "0.1.0"
