"""``python -m declip_mm``: the ``declip-mm`` command (declip_mm/cli.py; the package stays unimported until a command
needs a model: declip_mm/__init__.py)."""
import sys

from .cli import main

sys.exit(main())
