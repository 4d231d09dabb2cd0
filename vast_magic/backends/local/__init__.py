"""The embedded local engine (DESIGN.md "Local engine").

Client side: ``backend.LocalBackend`` (the backend protocol), ``engine_client``
(the connection to the daemon), ``pool`` (direct connections to workers),
``launcher`` (find/start/stop the daemon; the CLI's ``engine`` command).
Daemon side: ``daemon_main`` (the process), ``engine`` (live state and the
reconcile loop), ``rollout`` (tiers), ``daemon_ops`` (request ops), ``workers``
(processes), ``bundles`` (safe extraction), ``venvs`` (pip requirements),
``store`` (SQLite). ``policy`` is the pure autoscaler both can reason with.
"""

__all__ = []
