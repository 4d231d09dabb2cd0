"""The Vast.ai Serverless backend: ``VastBackend`` (backend.py) and ``preview_offers`` (offers.py)."""

__all__ = []
