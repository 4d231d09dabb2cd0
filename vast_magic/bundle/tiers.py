"""How much has to happen to go from one Manifest to the next: a pure function of data.

Tier 4 = a new endpoint (new deployment or tag), 3 = replace every worker
(image, env, secrets, search, ports, python), 2 = rolling code update,
1 = autoscaling only, 0 = nothing. The tier is the highest over the groups
that changed, and the reasons name every change in words a person reads,
never a secret value; ``tiers`` says which tier each reason implies (the
deploy widget draws them as a table).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..autoscaling import AutoscalingConfig, describe_changes, show_value
from .manifest import Manifest

__all__ = ["TierDecision", "decide_tier"]


@dataclass(frozen=True)
class TierDecision:
    """``tiers[i]`` is the tier ``reasons[i]`` implies; ``tier`` is the highest of them (0 without reasons)."""

    tier: int
    reasons: tuple[str, ...]
    tiers: tuple[int, ...] = ()


def decide_tier(previous: Manifest | None, current: Manifest) -> TierDecision:
    """Compare two Manifests; reasons come grouped by tier (highest first), each group sorted."""
    if previous is None:
        return TierDecision(4, ("new deployment",), (4,))
    groups = (
        (4, _changed("tag", previous.tag, current.tag)),
        (3, _image_reasons(previous, current)),
        (2, _code_reasons(previous, current)),
        (1, _autoscaling_reasons(previous, current)),
    )
    implied = [(reason, level) for level, reasons in groups for reason in reasons]
    return TierDecision(max((level for _, level in implied), default=0), tuple(reason for reason, _ in implied),
                        tuple(level for _, level in implied))


def _code_reasons(old: Manifest, new: Manifest) -> list[str]:
    reasons = _keyed("code", dict(old.remotes + old.code), dict(new.remotes + new.code), show=_code_name)
    reasons += _keyed("context", dict(old.contexts), dict(new.contexts))
    reasons += _listed("pip", old.pip, new.pip) + _listed("apt", old.apt, new.apt)
    if old.runs != new.runs:
        reasons.append("runs changed")
    reasons += _keyed("copy", dict(old.copies), dict(new.copies))
    if [d for d, _ in old.copies] != [d for d, _ in new.copies] and set(dict(old.copies)) == set(dict(new.copies)):
        reasons.append("copies reordered")
    return reasons


def _image_reasons(old: Manifest, new: Manifest) -> list[str]:
    reasons = _changed("image", old.image, new.image) + _changed("storage", old.storage, new.storage)
    reasons += _keyed("env", dict(old.env), dict(new.env)) + _keyed("secret", dict(old.secrets), dict(new.secrets))
    reasons += _changed("search", old.search, new.search)
    if old.ports != new.ports:
        reasons.append("ports changed")
    reasons += _changed("python", old.python_mode, new.python_mode)
    if old.docker_login != new.docker_login:
        reasons.append("docker login changed")
    return reasons


def _autoscaling_reasons(old: Manifest, new: Manifest) -> list[str]:
    return list(describe_changes(AutoscalingConfig(**dict(old.autoscaling)), AutoscalingConfig(**dict(new.autoscaling))))


def _code_name(key: str) -> str:
    """"source:mylib.helper" / "file:mylib.helpers.scale" -> the dotted name a person reads; other kinds keep
    their prefix ("import:np")."""
    return key.removeprefix("source:").removeprefix("file:")


def _keyed(label: str, before: dict[str, Any], after: dict[str, Any], show=lambda key: key) -> list[str]:
    """"label: +name", "label: -name", "label: name changed", sorted by what is shown."""
    reasons = []
    for key in sorted(set(before) | set(after), key=lambda k: (show(k), k)):
        if key not in before:
            reasons.append(f"{label}: +{show(key)}")
        elif key not in after:
            reasons.append(f"{label}: -{show(key)}")
        elif before[key] != after[key]:
            reasons.append(f"{label}: {show(key)} changed")
    return reasons


def _listed(label: str, before: tuple[str, ...], after: tuple[str, ...]) -> list[str]:
    added = [f"{label}: +{item}" for item in after if item not in before]
    removed = [f"{label}: -{item}" for item in before if item not in after]
    reasons = sorted(added + removed)
    if not reasons and before != after:
        reasons.append(f"{label}: order changed")
    return reasons


def _changed(label: str, before: Any, after: Any) -> list[str]:
    return [] if before == after else [f"{label}: {show_value(before)} -> {show_value(after)}"]
