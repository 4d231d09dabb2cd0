"""Testing aids for code written for ``backend="vast"``, offline (public and documented).

- ``FakeVast`` (``testing.fake``): Vast's API, autoscaler, storage and workers as an
  ``httpx.MockTransport``; in-process and quick, its worker is a process serving the bundle the
  client uploaded (``functions`` can script answers a real worker never gives).
- ``VastBox`` (``testing.box``): Vast's control plane on 127.0.0.1 whose workers are the
  official ``vastai`` worker serving the bundle the client uploaded; real processes, real
  sockets, real signatures. ``python -m vast_magic.testing`` runs one in the foreground.
"""
from __future__ import annotations

from .box import VastBox
from .fake import AUTOSCALER, STORAGE, WEB, WORKER, FakeDeployment, FakeVast, Recorded

__all__ = ["FakeVast", "FakeDeployment", "Recorded", "WEB", "AUTOSCALER", "STORAGE", "WORKER", "VastBox"]
