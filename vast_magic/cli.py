"""``vast-magic`` / ``python -m vast_magic``: the same operations as the API, from a shell.

Subcommands parse arguments and call the public Python API; they hold no logic
of their own beyond loading a ``.py`` file that defines a Deployment.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from typing import Sequence

from . import loop, settings
from .errors import ConfigError, VastMagicError
from .events import deployment_summary, format_deployment_status, format_event
from .known import unknown_deployment

__all__ = [
    "SCRIPT_MODULE", "UnknownDeployment", "load_deployment", "cmd_bundle", "cmd_deploy", "cmd_ls", "cmd_status",
    "cmd_logs", "cmd_teardown", "cmd_engine", "cmd_run_notebook", "build_parser", "main"
]

SCRIPT_MODULE = "__vast_magic_script__"


def load_deployment(path: str, app_name: str | None = None):
    """Import ``path`` as a module (not as __main__, so its main block does not run) and find its Deployment."""
    from .deployment import Deployment

    file = Path(path)
    if not file.is_file() or file.suffix != ".py":
        raise ConfigError(f"{path} is not a .py file; pass the script that defines your Deployment.")
    sys.path.insert(0, str(file.parent.absolute()))
    spec = importlib.util.spec_from_file_location(SCRIPT_MODULE, file)
    module = importlib.util.module_from_spec(spec)
    module.__vast_magic_session__ = True  # ship its functions as source, like __main__ (see capture)
    sys.modules[SCRIPT_MODULE] = module
    spec.loader.exec_module(module)
    found = {k: v for k, v in vars(module).items() if isinstance(v, Deployment)}
    if app_name is not None:
        if app_name not in found:
            raise ConfigError(f"{path} has no Deployment named {app_name!r}; found: {', '.join(found) or 'none'}.")
        return found[app_name]
    if len(found) != 1:
        raise ConfigError(f"{path} defines {len(found)} Deployments ({', '.join(found) or 'none'}); choose one with --app NAME.")
    return next(iter(found.values()))


class UnknownDeployment(Exception):
    """A name (or tag) that no deployment has: the command exits 1 with the known ones listed."""


def _local_backend():
    from .backends import get_backend
    return get_backend("local", home=str(settings.home()))


def _backend(kind: str | None):
    """The backend status/logs/teardown act on: ``--backend``, else the ``backend`` setting."""
    kind = settings.resolve("backend", kind)
    if kind == "local":
        return _local_backend()
    from .backends import get_backend
    from .backends.vast.keys import find_api_key
    return get_backend("vast", home=str(settings.home()), api_key=find_api_key(None))


def _check_known(backend, name: str, tag: str | None) -> None:
    """Typos must not look like success: an unknown deployment is an error listing the known ones."""
    message = unknown_deployment(name, tag, loop.run_sync(backend.known_deployments()), backend.kind,
                                 "" if tag is None else "Pass --tag T for another tag.")
    if message:
        raise UnknownDeployment(message)


def cmd_bundle(args: argparse.Namespace) -> int:
    app = load_deployment(args.file, args.app)
    bundle = app.build_bundle(args.output)
    print(f"wrote {bundle.path}: {len(bundle.files)} files, code {bundle.fingerprint.code[:12]}")
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    app = load_deployment(args.file, args.app)
    if args.tag:
        app.tag = args.tag
    report = app.ensure_ready(dry_run=args.dry_run, wait=not args.no_wait, timeout=args.timeout)
    print(f"tier {report.tier}; endpoint {report.endpoint}; workers {len(report.workers)}")
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    statuses = loop.run_sync(_local_backend().list_deployments())
    if not statuses:
        print("no deployments")
    for status in statuses:
        print(deployment_summary(status))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    backend = _backend(args.backend)
    _check_known(backend, args.name, args.tag)
    print(format_deployment_status(loop.run_sync(backend.status(args.name, args.tag))))
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    if args.tail < 1:
        raise ConfigError(f"--tail must be a whole number >= 1, got {args.tail}.")
    backend = _backend(args.backend)
    _check_known(backend, args.name, args.tag)
    lines = loop.run_sync(backend.logs(args.name, args.tag, args.function, args.tail))
    for line in lines:
        print(format_event(line).rstrip())
    if not lines:
        print(f"no log lines for {args.name}/{args.tag}" + (f" function {args.function}" if args.function else ""))
    return 0


def cmd_teardown(args: argparse.Namespace) -> int:
    backend = _backend(args.backend)
    tag = None if args.all_tags else args.tag
    _check_known(backend, args.name, tag)
    loop.run_sync(backend.teardown(args.name, tag))
    print(f"torn down {args.name}" + ("" if args.all_tags else f"/{args.tag}"))
    return 0


def cmd_engine(args: argparse.Namespace) -> int:
    from .backends.local import daemon_control
    home = settings.home()
    if args.action == "start":
        info = daemon_control.engine_start(home)
    elif args.action == "stop":
        info = daemon_control.engine_stop(home)
    else:
        info = daemon_control.engine_status(home)
    print(json.dumps(info, indent=2, sort_keys=True, default=str))
    return 0


def cmd_run_notebook(args: argparse.Namespace) -> int:
    from .notebook.runner import run_notebook
    return 1 if run_notebook(args.notebook, timeout=args.timeout) else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vast-magic", description="Vast.ai Serverless deployments from notebooks and scripts; local engine by default.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("bundle", help="build the bundle of a .py file that defines a Deployment")
    p.add_argument("file"), p.add_argument("-o", "--output", required=True), p.add_argument("--app")
    p.set_defaults(run=cmd_bundle)
    p = sub.add_parser("deploy", help="deploy a .py file that defines a Deployment")
    p.add_argument("file"), p.add_argument("--app"), p.add_argument("--tag")
    p.add_argument("--dry-run", action="store_true"), p.add_argument("--no-wait", action="store_true")
    p.add_argument("--timeout", type=float)
    p.set_defaults(run=cmd_deploy)
    sub.add_parser("ls", help="list local deployments").set_defaults(run=cmd_ls)
    for name, run, help_text in (("status", cmd_status, "status of a deployment"), ("logs", cmd_logs, "recent worker logs"),
                                 ("teardown", cmd_teardown, "stop a deployment")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("name"), p.add_argument("--tag", default="default")
        p.add_argument("--backend", choices=("local", "vast"), help="where it runs (default: the backend setting)")
        if name == "logs":
            p.add_argument("function", nargs="?"), p.add_argument("--tail", type=int, default=200)
        if name == "teardown":
            p.add_argument("--all-tags", action="store_true")
        p.set_defaults(run=run)
    p = sub.add_parser("run-notebook", help="run a notebook headless on the local engine and print its outputs")
    p.add_argument("notebook"), p.add_argument("--timeout", type=float, default=600.0)
    p.set_defaults(run=cmd_run_notebook)
    p = sub.add_parser("engine", help="start, stop or inspect the local engine daemon")
    p.add_argument("action", choices=("start", "stop", "status"))
    p.set_defaults(run=cmd_engine)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except UnknownDeployment as exc:
        print(f"vast-magic {args.command}: {exc}", file=sys.stderr)
        return 1
    except VastMagicError as exc:
        print(f"vast-magic: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
