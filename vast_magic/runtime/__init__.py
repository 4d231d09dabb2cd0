"""The worker runtime, shipped inside every bundle as the package ``vast_magic_runtime``.

It runs on the worker (local subprocess or Vast instance) with nothing but the
standard library and cloudpickle (vendored in bundles, see ``_compat``), so it
must never import ``vast_magic``: a test enforces that. ``serve`` is the entry
point; the other modules each own one step of the worker's life.
"""

__all__ = []
