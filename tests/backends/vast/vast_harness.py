"""The Vast backend tests' harness: a VastBackend on the fake Vast API, and plans made of stand-ins.

``Harness`` records the backend's sleeps (with the jitter injected, so backoff
is deterministic) and events; ``make_plan`` builds a ``DeployPlan`` whose
image, query and manifest are small stand-ins with the attributes the
backend reads. The ``h`` fixture (conftest.py) is a fresh ``Harness``.
"""
from __future__ import annotations

import asyncio
import io
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from vast_magic.backends.base import DeployPlan
from vast_magic.backends.vast.backend import VastBackend
from vast_magic.testing import FakeVast

KEY = "user-key-0123456789"


@dataclass(frozen=True)
class Query:
    """Stand-in for vast_magic.query.Query: str() is the search string, to_api_dict() the JSON form."""
    text: str = "verified=true rentable=true rented=false"
    api: dict = field(default_factory=lambda: {"verified": {"eq": True}, "rentable": {"eq": True}})

    def __str__(self) -> str:
        return self.text

    def to_api_dict(self) -> dict:
        return dict(self.api)


@dataclass(frozen=True)
class Image:
    from_image: str = "vastai/base-image:@vastai-automatic-tag"
    storage: float = 16
    ports: tuple = ((8080, "tcp"),)
    venv: str | None = "/venv/main"
    system_python: bool = False
    requirements: Query = Query()
    docker_login: tuple = ()


@dataclass(frozen=True)
class Manifest:
    text: str = '{"manifest": 1}'

    def to_json(self) -> str:
        return self.text


#: The smallest bundle a Vast worker serves: a deployment.py registering the config's name, no functions (the
#: backend tests script calls with FakeVast.functions; tests/backends/vast/test_deploy.py ships real ones).
MINIMAL_ENTRY = 'from vastai import Deployment\n\napp = Deployment(name="demo")\n'


def make_bundle(path: Path, code: str = MINIMAL_ENTRY, manifest: str = "{}") -> str:
    with tarfile.open(path, "w:gz") as tar:
        for name, text in (("./config.json", '{"name": "demo"}'), ("./deployment.py", code),
                           ("./manifest.json", manifest)):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return str(path)


def make_plan(tmp_path: Path, **changes) -> DeployPlan:
    base = dict(name="demo", tag="default", tier=4, reasons=("new deployment",), manifest=Manifest(),
                bundle_path=make_bundle(tmp_path / "b.tar.gz"), env=(("MODE", "fast"),),
                secrets=(("HF_TOKEN", "s3cret value"),), autoscaling={"max_workers": 4, "cold_workers": 1},
                image=Image(), ttl=None, wait=False, timeout=30.0)
    return DeployPlan(**{**base, **changes})


class Harness:
    def __init__(self, tmp_path: Path, fake: FakeVast | None = None, jitter=lambda: 0.5):
        self.fake = fake or FakeVast(api_key=KEY)
        self.sleeps: list[float] = []
        self.events: list = []
        self.backend = VastBackend(home=str(tmp_path / "home"), api_key=KEY, transport=self.fake.transport(),
                                   sleep=self._sleep, jitter=jitter)

    async def _sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await asyncio.sleep(0)

    def apply(self, plan: DeployPlan):
        return asyncio.run(self.backend.apply(plan, self.events.append))

    def of(self, kind) -> list:
        return [e for e in self.events if isinstance(e, kind)]
