"""``vast-magic`` / ``python -m vast_magic``: the same operations as the API, from a shell.

Subcommands parse arguments and call the public Python API; they hold no logic
of their own beyond importing the module that defines a Deployment. A target is
``pkg.app[:name]`` (a module importable from the current folder) or
``path/to/app.py[:name]``; a file is imported under the module name it has in
its folder (``pkg/app.py`` inside package ``pkg`` is ``pkg.app``), never as
``__main__``, so its main block does not run and it deploys exactly as an
``import`` of it would.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from typing import Sequence

from . import loop, settings
from .errors import ConfigError, VastMagicError
from .events import deployment_summary, format_deployment_status, format_event
from .known import unknown_deployment

__all__ = [
    "split_target", "import_target", "UnknownDeploymentError", "load_deployment", "cmd_bundle", "cmd_deploy", "cmd_ls",
    "cmd_status", "cmd_logs", "cmd_teardown", "cmd_engine", "cmd_run_notebook", "target_file", "cmd_watch",
    "build_parser", "main"
]


def split_target(target: str) -> tuple[str, str | None]:
    """``"pkg.app:app"`` -> ``("pkg.app", "app")``; no ``:name`` -> ``(target, None)``."""
    head, sep, tail = target.rpartition(":")
    return (head, tail) if sep and head and tail.isidentifier() else (target, None)


def _names_a_path(spec: str) -> bool:
    return spec.endswith(".py") or "/" in spec or os.sep in spec or Path(spec).is_file()


def import_target(spec: str):
    """The module a target names: a ``.py`` path (imported under its module name) or a dotted module name."""
    if _names_a_path(spec):
        return _import_file(spec)
    if not all(part.isidentifier() for part in spec.split(".")):
        raise ConfigError(f"{spec} is neither a .py file nor a module name; pass path/to/app.py or pkg.module[:name].")
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(spec)
    except ModuleNotFoundError as exc:
        raise ConfigError(f"{spec} is neither a .py file nor an importable module ({exc}); pass path/to/app.py "
                          "or a module name importable from this folder.") from None


def _import_file(path: str):
    from .capture.origins import is_local_module, module_name_for_file

    file = Path(path)
    if not file.is_file() or file.suffix != ".py":
        raise ConfigError(f"{path} is not a .py file; pass the script that defines your Deployment.")
    file = file.resolve()
    dotted = module_name_for_file(file)
    root = file.parents[dotted.count(".") + (file.name == "__init__.py")]
    top = dotted.partition(".")[0]
    for name in [n for n in list(sys.modules) if n == top or n.startswith(top + ".")]:
        module = sys.modules[name]           # a local module of that name from another folder: load this one
        if is_local_module(module) and not Path(module.__file__).resolve().is_relative_to(root):
            del sys.modules[name]
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    module = importlib.import_module(dotted)
    if Path(getattr(module, "__file__", "") or "").resolve() != file:
        raise ConfigError(f"{path} would be imported as {dotted!r}, but that name is {module.__file__}; "
                          "rename the file so its module name is free.")
    return module


def load_deployment(target: str, app_name: str | None = None):
    """Import the target's module and return its Deployment (the one named, or the only one)."""
    from .deployment import Deployment

    spec, named = split_target(target)
    if named and app_name and named != app_name:
        raise ConfigError(f"{target} names Deployment {named!r} but --app says {app_name!r}; give one of them.")
    app_name = named or app_name
    module = import_target(spec)
    found = {k: v for k, v in vars(module).items() if isinstance(v, Deployment)}
    if app_name is not None:
        if app_name not in found:
            raise ConfigError(f"{spec} has no Deployment named {app_name!r}; found: {', '.join(found) or 'none'}.")
        return found[app_name]
    if len(found) != 1:
        raise ConfigError(f"{spec} defines {len(found)} Deployments ({', '.join(found) or 'none'}); choose one "
                          f"with {spec}:NAME (or --app NAME).")
    return next(iter(found.values()))


class UnknownDeploymentError(Exception):
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
        raise UnknownDeploymentError(message)


def cmd_bundle(args: argparse.Namespace) -> int:
    app = load_deployment(args.target, args.app)
    bundle = app.build_bundle(args.output)
    print(f"wrote {bundle.path}: {len(bundle.files)} files, code {bundle.fingerprint.code[:12]}")
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    app = load_deployment(args.target, args.app)
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
    from .backends.local import launcher
    home = settings.home()
    if args.action == "start":
        info = launcher.engine_start(home)
    elif args.action == "stop":
        info = launcher.engine_stop(home)
    else:
        info = launcher.engine_status(home)
    print(json.dumps(info, indent=2, sort_keys=True, default=str))
    return 0


def cmd_run_notebook(args: argparse.Namespace) -> int:
    from .notebook.runner import run_notebook
    return 1 if run_notebook(args.notebook, timeout=args.timeout) else 0


def target_file(spec: str) -> str:
    """The file a target names (before importing it, which may fail while the user edits it)."""
    if _names_a_path(spec):
        if not Path(spec).is_file() or not spec.endswith(".py"):
            raise ConfigError(f"{spec} is not a .py file; pass the script that defines your Deployment.")
        return os.path.realpath(spec)
    if not all(part.isidentifier() for part in spec.split(".")):
        raise ConfigError(f"{spec} is neither a .py file nor a module name; pass path/to/app.py or pkg.module[:name].")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        found = importlib.util.find_spec(spec)
    except (ImportError, ValueError) as exc:
        found, reason = None, f" ({exc})"
    else:
        reason = ""
    if found is None or not (found.origin or "").endswith(".py"):
        raise ConfigError(f"cannot find module {spec} from this folder{reason}; pass path/to/app.py or a module "
                          "name importable from here.")
    return os.path.realpath(found.origin)


def _redeploy(args: argparse.Namespace, state, first: str) -> None:
    """One attempt of ``watch``: import the target afresh, watch what its capture reads, deploy. An error
    is printed and waited out; nothing is torn down, so the last good version keeps serving."""
    from .watch import describe_import_error, error_files, forget_modules, refresh_sources, watched_files

    state.attempted_now()                     # tried once per change, whatever happens below
    refresh_sources(state.files)
    forget_modules(state.files)
    try:
        app = load_deployment(args.target, args.app)
    except Exception as exc:  # noqa: BLE001 - whatever the user's module raises is reported, then waited out
        state.attempted_now(state.files | error_files(exc))
        print(f"cannot load {args.target}; fix it and save (nothing was deployed or torn down):\n"
              f"{describe_import_error(exc)}")
        return
    if args.tag:
        app.tag = args.tag
    try:
        state.attempted_now({first, *watched_files(app)})
        report = app.ensure_ready(timeout=args.timeout)
    except Exception as exc:  # noqa: BLE001 - a failed deploy is reported and waited out like a broken file
        detail = f"{type(exc).__name__}: {exc}" if isinstance(exc, VastMagicError) else describe_import_error(exc)
        print(f"deploy failed: {detail}\nfix it and save; the last good version keeps serving.")
        return
    state.deployed = (app.effective_name, app.tag)
    reasons = "; ".join(report.reasons) or "no changes"
    print(f"deployed tier {report.tier} ({reasons}); endpoint {report.endpoint}")


def cmd_watch(args: argparse.Namespace) -> int:
    """Deploy, then redeploy on every save of a file the deployment's code comes from, until Ctrl-C."""
    from .watch import DEPLOY, WAIT, WatchState, check_interval, display_path

    interval = check_interval(args.interval)
    first = target_file(split_target(args.target)[0])
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)     # a pipe (a log, a test) sees each line as it is printed
    state = WatchState({first})
    state.poll()
    shown: frozenset = frozenset()
    try:
        _redeploy(args, state, first)
        while True:
            if state.files != shown:                 # at the start, and when the code imports other files
                shown = state.files
                print(f"watching {', '.join(sorted(map(display_path, shown)))}; Ctrl-C stops watching "
                      "(the deployment keeps serving)")
            time.sleep(interval)
            decision = state.poll()
            if decision.action == WAIT:
                state.attempted_now()
                print("not deployed; fix it and save (the last good version keeps serving):\n"
                      + "\n".join(decision.problems))
            elif decision.action == DEPLOY:
                print(f"changed: {', '.join(map(display_path, decision.changed))}")
                _redeploy(args, state, first)
    except KeyboardInterrupt:
        name, tag = state.deployed or ("NAME", "default")
        command = f"vast-magic teardown {name}" + (f" --tag {tag}" if tag != "default" else "")
        print(f"stopped watching; the deployment keeps serving ({command} stops it)")
        return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vast-magic", description="Vast.ai Serverless deployments from notebooks and scripts; local engine by default.")
    sub = parser.add_subparsers(dest="command", required=True)
    target = dict(metavar="TARGET", help="pkg.module[:name] or path/to/app.py[:name] (name: the Deployment "
                                         "variable, needed when the module holds several)")
    p = sub.add_parser("bundle", help="build the bundle of a module that defines a Deployment")
    p.add_argument("target", **target), p.add_argument("-o", "--output", required=True), p.add_argument("--app")
    p.set_defaults(run=cmd_bundle)
    p = sub.add_parser("deploy", help="deploy a module that defines a Deployment")
    p.add_argument("target", **target), p.add_argument("--app"), p.add_argument("--tag")
    p.add_argument("--dry-run", action="store_true"), p.add_argument("--no-wait", action="store_true")
    p.add_argument("--timeout", type=float)
    p.set_defaults(run=cmd_deploy)
    p = sub.add_parser("watch", help="deploy, then redeploy on every save of the files its code comes from",
                       description="Deploy TARGET, then poll the files its code comes from (the target and the "
                                   "local modules it ships) and redeploy when one changes, printing the tier and "
                                   "reasons. A file that does not import is reported and waited out; nothing is "
                                   "torn down. Ctrl-C stops watching; the deployment keeps serving.")
    p.add_argument("target", **target)
    p.add_argument("--app", metavar="NAME", help="the Deployment variable (like TARGET:NAME)")
    p.add_argument("--tag", metavar="T", help="deploy under this tag")
    p.add_argument("--timeout", type=float, metavar="S", help="seconds each deploy waits for workers")
    p.add_argument("--interval", type=float, default=0.5, metavar="S", help="seconds between polls (default 0.5)")
    p.set_defaults(run=cmd_watch)
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
    except UnknownDeploymentError as exc:
        print(f"vast-magic {args.command}: {exc}", file=sys.stderr)
        return 1
    except VastMagicError as exc:
        print(f"vast-magic: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
