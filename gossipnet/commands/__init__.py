"""One module per CLI command; ``gossipnet.cli`` parses flags and dispatches here."""
