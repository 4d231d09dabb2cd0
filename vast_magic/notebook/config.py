"""``%config VastMagic.<name> = value``: the notebook layer of the settings resolver.

The traits are only a place to store values; ``settings.resolve`` stays the
one resolver (a trait left at None falls through to the environment,
pyproject.toml and the default). Values are validated when set, with the
same parser the resolver uses, so a typo fails in the ``%config`` cell.
"""
from __future__ import annotations

from traitlets import TraitError, Unicode, validate
from traitlets.config import Configurable

from .. import settings

__all__ = ["VastMagic"]


def _trait(name: str) -> Unicode:
    return Unicode(None, allow_none=True, help=settings.SETTINGS[name].help).tag(config=True)


class VastMagic(Configurable):
    """vast_magic settings for this kernel (highest precedence after explicit arguments)."""

    backend = _trait("backend")
    display = _trait("display")
    home = _trait("home")
    vast_url = _trait("vast_url")
    autoscaler_url = _trait("autoscaler_url")
    vast_poll_interval = _trait("vast_poll_interval")

    @validate("backend", "display", "home", "vast_url", "autoscaler_url", "vast_poll_interval")
    def _check(self, proposal):
        value = proposal["value"]
        if value is None:
            return value
        name = proposal["trait"].name
        try:
            settings.SETTINGS[name].parse(value)
        except (TypeError, ValueError) as exc:
            raise TraitError(f"VastMagic.{name} = {value!r} is invalid: {exc}.") from None
        return value

    def lookup(self, name: str):
        """The ``settings.set_config_source`` hook: a trait's value, None when unset or unknown."""
        return getattr(self, name, None) if self.has_trait(name) else None
