"""``python -m vast_magic`` is the ``vast-magic`` command."""
import sys

from .cli import main

__all__ = []

sys.exit(main())
