#!/usr/bin/env python3
"""Start a gossipnet node: ``python daemon.py`` is ``gossipnet run`` with its defaults."""

import sys

from gossipnet.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
