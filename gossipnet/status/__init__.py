"""A node's status: metrics history, the /api/status schema, the progress PNG, the HTML page, /metrics.

No sockets here; ``gossipnet.net.http`` serves these over HTTP (see docs/API.md).
"""
