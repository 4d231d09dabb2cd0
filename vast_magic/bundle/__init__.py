"""Manifest, tiers and the reproducible bundle (see docs/internals.md "Bundle layout")."""
from .build import read_bundle_manifest, write_bundle
from .manifest import Manifest, build_manifest, secret_key
from .tiers import TierDecision, decide_tier

__all__ = ["Manifest", "build_manifest", "TierDecision", "decide_tier", "write_bundle", "read_bundle_manifest",
           "secret_key"]
