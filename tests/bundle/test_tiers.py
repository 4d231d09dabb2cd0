"""decide_tier as a specification: every component, alone and in every pair."""
from __future__ import annotations

import itertools
from dataclasses import replace

import pytest

from vast_magic.bundle import Manifest, TierDecision, decide_tier

BASE = Manifest(
    name="demo", tag="default",
    remotes=(("old_fn", "r0"), ("square", "r1")),
    contexts=(("Model", "c1"),),
    code=(("import:np", "i1"), ("source:helper", "s1"), ("value:SCALE", "v1")),
    pip=("scipy",), apt=(), runs=("echo hi",), copies=(("data", "d1"),),
    image="vastai/base-image:tag", storage=16.0,
    env=(("MODE", "e1"),), secrets=(("HF_TOKEN", "h1"),), search="verified=true",
    ports=((3000, "tcp"),), python_mode="default", docker_login=(),
    autoscaling=(("max_workers", 4),),
)

# (label, changes to BASE, tier, reasons)
COMPONENTS = [
    ("remote changed", {"remotes": (("old_fn", "r0"), ("square", "r2"))}, 2, ("code: square changed",)),
    ("remote removed", {"remotes": (("square", "r1"),)}, 2, ("code: -old_fn",)),
    ("helper added", {"code": BASE.code + (("source:zeta", "z"),)}, 2, ("code: +zeta",)),
    ("helper changed", {"code": (("import:np", "i1"), ("source:helper", "s2"), ("value:SCALE", "v1"))}, 2,
     ("code: helper changed",)),
    ("value changed", {"code": (("import:np", "i1"), ("source:helper", "s1"), ("value:SCALE", "v2"))}, 2,
     ("code: value:SCALE changed",)),
    ("context changed", {"contexts": (("Model", "c2"),)}, 2, ("context: Model changed",)),
    ("pip added", {"pip": ("scipy", "numpy")}, 2, ("pip: +numpy",)),
    ("pip removed", {"pip": ()}, 2, ("pip: -scipy",)),
    ("apt added", {"apt": ("ffmpeg",)}, 2, ("apt: +ffmpeg",)),
    ("runs changed", {"runs": ("echo bye",)}, 2, ("runs changed",)),
    ("copy changed", {"copies": (("data", "d2"),)}, 2, ("copy: data changed",)),
    ("image changed", {"image": "vastai/pytorch:tag"}, 3, ("image: vastai/base-image:tag -> vastai/pytorch:tag",)),
    ("storage changed", {"storage": 32.0}, 3, ("storage: 16 -> 32",)),
    ("env changed", {"env": (("MODE", "e2"),)}, 3, ("env: MODE changed",)),
    ("env added", {"env": (("EXTRA", "x"), ("MODE", "e1"))}, 3, ("env: +EXTRA",)),
    ("secret changed", {"secrets": (("HF_TOKEN", "h2"),)}, 3, ("secret: HF_TOKEN changed",)),
    ("search changed", {"search": "verified=false"}, 3, ("search: verified=true -> verified=false",)),
    ("ports changed", {"ports": ((3000, "tcp"), (8080, "tcp"))}, 3, ("ports changed",)),
    ("python changed", {"python_mode": "venv:/venv/main"}, 3, ("python: default -> venv:/venv/main",)),
    ("docker login", {"docker_login": (("docker_login_user", "me"),)}, 3, ("docker login changed",)),
    ("autoscaling changed", {"autoscaling": (("max_workers", 8),)}, 1, ("autoscaling: max_workers 4 -> 8",)),
    ("autoscaling added", {"autoscaling": (("cold_workers", 1), ("max_workers", 4))}, 1,
     ("autoscaling: cold_workers unset -> 1",)),
    ("tag changed", {"tag": "v2"}, 4, ("tag: default -> v2",)),
]


def test_new_deployment_is_tier_4():
    assert decide_tier(None, BASE) == TierDecision(4, ("new deployment",), (4,))


def test_identical_manifest_is_tier_0_without_reasons():
    assert decide_tier(BASE, replace(BASE)) == TierDecision(0, (), ())


@pytest.mark.parametrize("label,changes,tier,reasons", COMPONENTS, ids=[c[0] for c in COMPONENTS])
def test_single_component(label, changes, tier, reasons):
    assert decide_tier(BASE, replace(BASE, **changes)) == TierDecision(tier, reasons, (tier,) * len(reasons))


PAIRS = [(a, b) for a, b in itertools.combinations(COMPONENTS, 2) if not set(a[1]) & set(b[1])]


@pytest.mark.parametrize("first,second", PAIRS, ids=[f"{a[0]}+{b[0]}" for a, b in PAIRS])
def test_pairs_take_the_max_tier_and_every_reason(first, second):
    decision = decide_tier(BASE, replace(BASE, **first[1], **second[1]))
    assert decision.tier == max(first[2], second[2])
    assert set(decision.reasons) == set(first[3]) | set(second[3])
    assert len(decision.reasons) == len(first[3]) + len(second[3])
    implied = {reason: tier for _, _, tier, reasons in (first, second) for reason in reasons}
    assert dict(zip(decision.reasons, decision.tiers)) == implied   # each reason with the tier it implies


def test_reasons_are_grouped_by_tier_then_sorted_by_name():
    changed = replace(BASE, tag="v2", autoscaling=(("max_workers", 8),), storage=32.0,
                      remotes=(("square", "r2"),), code=BASE.code + (("source:alpha", "a"),))
    assert decide_tier(BASE, changed).reasons == (
        "tag: default -> v2", "storage: 16 -> 32", "code: +alpha", "code: -old_fn", "code: square changed",
        "autoscaling: max_workers 4 -> 8")


def test_secret_reason_never_shows_the_digest():
    reasons = decide_tier(BASE, replace(BASE, secrets=(("HF_TOKEN", "h-secret-digest"),))).reasons
    assert reasons == ("secret: HF_TOKEN changed",) and "h-secret-digest" not in " ".join(reasons)


def test_decision_survives_json_round_trip():
    changed = replace(BASE, pip=("scipy", "numpy"))
    assert decide_tier(Manifest.from_json(BASE.to_json()), Manifest.from_json(changed.to_json())) == \
        TierDecision(2, ("pip: +numpy",), (2,))
