"""``python -m declip_mm``: the ``declip-mm`` command (declip_mm/cli.py)."""
import sys

from .cli import main

sys.exit(main())
