"""``python -m gossipnet``: the ``gossipnet`` command, for environments without the script on PATH."""

import sys

from gossipnet.cli import main

sys.exit(main())
