"""``python -m vast_magic.testing``: run a Vast box in the foreground (see ``testing.box``)."""
import sys

from .box import main

__all__ = []

sys.exit(main())
