"""A deployment's inputs as data, for the manifest and bundle tests: code as capture gives it, an image, autoscaling.

``demo_inputs()`` is one notebook's worth of everything ``build_manifest`` takes
(a cell module with an import, values, a deployment reference, a helper, a
context class and a remote function; a local module file; an image with a
secret); the ``make_*`` functions build each part with changes.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import cloudpickle

from vast_magic.bundle import Manifest, build_manifest
from vast_magic.bundle.registry_spec import ContextSpec, RemoteSpec
from vast_magic.capture.digests import source_digest, value_digest
from vast_magic.capture.model import (CapturedCode, DeploymentRef, ImportDef, ModuleFile, SourceDef, SourceModule,
                                      ValueDef)
from vast_magic.secret import Secret

KEY = b"k" * 32
SECRET_VALUE = "hf_sekrit_value_123"
SQUARE = ("async def square(x, y=1):\n    model = app.get_context(Model)\n    print('squaring', x)\n"
          "    return helper(x * x) * y + model.offset + len(TAGS)\n")
HELPER = "def helper(x):\n    return x + OFFSET\n"
MODEL = ("class Model:\n    def __init__(self, offset):\n        self.offset = offset\n"
         "    async def __aenter__(self):\n        return self\n    async def __aexit__(self, *exc):\n        return False\n")


def source(name: str, text: str, kind: str = "function") -> SourceDef:
    return SourceDef(name, kind, text, source_digest(text))


def value(name: str, obj) -> ValueDef:
    return ValueDef(name, cloudpickle.dumps(obj, protocol=5), value_digest(obj))


def make_code(*, helper: str = HELPER, offset: int = 100, extra: tuple = ()) -> CapturedCode:
    """Notebook-cell code as capture would give it: one generated module, in run order."""
    items = (ImportDef("math", "import math", hashlib.sha256(b"import math").hexdigest()),
             value("OFFSET", offset), value("TAGS", {"b", "a", "c"}), DeploymentRef("app"),
             source("helper", helper), source("Model", MODEL, "class"), source("square", SQUARE), *extra)
    return CapturedCode(
        source_modules=(SourceModule("vast_magic_app", "vast_magic_app.py", items),),
        file_modules=(ModuleFile("localmod", "localmod.py", b"X = 1\n", hashlib.sha256(b"X = 1\n").hexdigest()),))


def make_image(**changes):
    from vast_magic.image import ImageSpec
    fields = dict(from_image="vastai/base-image:@vastai-automatic-tag", storage=16.0, pip=("numpy",), apt=(),
                  env=(("MODE", "fast"), ("HF_TOKEN", Secret(SECRET_VALUE))), requirements=None,
                  search="verified=true rentable=true rented=false", runs=("echo hi", ("python", "-V")), copies=(),
                  venv=None, system_python=False, ports=((3000, "tcp"),), docker_login=())
    fields.update(changes)
    return ImageSpec(**fields)


def make_autoscaling(**fields):
    from vast_magic.autoscaling import AutoscalingConfig
    return AutoscalingConfig(**fields)


REMOTES = (RemoteSpec("square", True, benchmark_dataset=({"x": 2}, {"x": 3}), benchmark_runs=2,
                      at="vast_magic_app:square"),)
CONTEXTS = (ContextSpec("Model", (), (("offset", 10),), at="vast_magic_app:Model"),)


@dataclass
class Inputs:
    name: str = "demo"
    tag: str = "default"
    code: CapturedCode = None
    remotes: tuple = REMOTES
    contexts: tuple = CONTEXTS
    image: object = None
    autoscaling: object = None

    def manifest(self, key: bytes = KEY) -> Manifest:
        return build_manifest(name=self.name, tag=self.tag, image=self.image, autoscaling=self.autoscaling,
                              code=self.code, remotes=self.remotes, contexts=self.contexts, secret_key=key)


def demo_inputs(**image_changes) -> Inputs:
    return Inputs(code=make_code(), image=make_image(**image_changes), autoscaling=make_autoscaling(max_workers=4))
