"""The IPython magics of ``%load_ext vast_magic``.

Each magic parses its line with ``magic_arguments`` (so ``%vast_deploy?``
shows the whole help and a bad argument is a ``UsageError`` with the usage
line) and hands the values to a plain function in ``actions.py`` (``watching.py`` for
``%vast_deploy --watch``).
"""
from __future__ import annotations

import re
from typing import Any, Callable

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments
from IPython.utils.process import arg_split

from .. import settings
from . import actions as ops
from .config import VastMagic
from .watching import kernel_loop_or_raise, start_watch

__all__ = [
    "APP_HELP", "strip_comment", "parse", "split_expression_option", "expression_forms", "VastMagics", "get_session", "load_ipython_extension",
    "unload_ipython_extension"
]

APP_HELP = "a notebook variable holding the Deployment to use (default: the session deployment)"


def strip_comment(line: str) -> str:
    """Drop a trailing ``# comment``: a ``#`` that starts a word outside quotes (``A=#fff`` stays)."""
    quote = None
    for index, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1].isspace()):
            return line[:index]
    return line


def parse(magic: Callable, line: str) -> Any:
    """Parse like ``parse_argstring``, but shell-like (quotes group words and are removed), and
    errors carry the magic's usage line."""
    try:
        return magic.parser.parse_args(arg_split(strip_comment(line), posix=True))
    except (UsageError, ValueError) as exc:  # ValueError: unbalanced quotes in the line
        usage = magic.parser.format_usage().strip()
        raise UsageError(f"{exc}\n{usage}") from None


_OPTION_START = re.compile(r"\s+--[A-Za-z]")


def _scan(line: str, start: int = 0, stop_at_option: bool = True) -> int:
    """From ``start``, the index of the next ``--option`` outside quotes and brackets (the end of a value
    that may hold spaces in brackets), or with ``stop_at_option=False`` len(line) if all brackets and quotes
    close and -1 if not."""
    quote, depth, index = None, 0, start
    while index < len(line):
        char = line[index]
        if quote:
            quote = None if char == quote and line[index - 1] != "\\" else quote
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth = max(0, depth - 1)
        elif stop_at_option and depth == 0 and _OPTION_START.match(line, index):
            return index
        index += 1
    return index if stop_at_option or (quote is None and depth == 0) else -1


def split_expression_option(line: str, option: str) -> tuple[str, str | None]:
    """Take ``option``'s value out of ``line`` as written (quotes kept, spaces allowed inside brackets):
    returns (the line without it, the raw value), or (line, None) when the option is absent or empty."""
    for match in re.finditer(rf"(?:^|\s){re.escape(option)}(?:=|\s+|$)", line):
        if _scan(line[:match.start()], stop_at_option=False) < 0:     # inside another option's quoted value
            continue
        end = _scan(line, match.end())
        raw = line[match.end():end].strip()
        if raw:
            return line[:match.start()] + " " + line[end:], raw
    return line, None


def expression_forms(raw: str) -> tuple[str, ...]:
    """The texts a Python-expression option may mean, in the order to try them: shell-split (quotes
    removed: ``--benchmark "[{'x': 2}]"``), then as written (IPython's own magics keep quotes:
    ``--benchmark [{'x': 2}]``)."""
    try:
        split = " ".join(arg_split(raw, posix=True))
    except ValueError:            # unbalanced quotes: only the raw text can be meant
        split = None
    return tuple(dict.fromkeys(form for form in (split, raw) if form))


def _app_and_call_args(line: str) -> tuple[str, str]:
    """Split ``%%vast_context`` into its option part (``--app VAR``) and the free call text after it."""
    match = re.match(r"\s*(--app(?:=|\s+)\S+)?\s*(.*)\Z", line, re.S)
    options, call = match.group(1) or "", match.group(2)
    if call.startswith("-"):
        return line, ""  # an unknown option: let the parser reject the whole line with its usage
    return options, call


@magics_class
class VastMagics(Magics):
    """Line and cell magics over the session deployment (or ``--app VAR``)."""

    def __init__(self, shell: Any, session: ops.NotebookSession, config: VastMagic):
        super().__init__(shell)
        self.session = session
        self.config_object = config

    @magic_arguments()
    @argument("image", help="the worker image, e.g. vastai/base-image:@vastai-automatic-tag")
    @argument("--storage", type=float, metavar="GB", help="disk space in GB")
    @argument("--pip", nargs="+", action="extend", default=[], metavar="P", help="pip packages to install")
    @argument("--apt", nargs="+", action="extend", default=[], metavar="P", help="apt packages to install")
    @argument("--env", nargs="+", action="extend", default=[], metavar="K=V", help="environment variables")
    @argument("--require", nargs="+", action="extend", default=[], metavar="EXPR",
              help='GPU search filters, e.g. "gpu_ram >= 24" (quote each one)')
    @argument("--offers", action="store_true", help="also show the matching Vast offers (count and price range)")
    @argument("--pricing", default="on-demand", metavar="MODE",
              help="how --offers prices them: on-demand (default), interruptible or reserved")
    @line_magic
    def vast_image(self, line: str = ""):
        """Set the session deployment's image and return it (replaces any earlier image)."""
        args = parse(self.vast_image, line)
        image = ops.set_image(self.session.app, args.image, storage=args.storage, pip=args.pip, apt=args.apt,
                              env=ops.parse_env(args.env), require=args.require)
        if args.offers:
            from IPython.display import display
            display(image.preview_offers(pricing=args.pricing))
        return image

    @magic_arguments()
    @argument("--app", metavar="VAR", help=APP_HELP)
    @argument("--function", nargs="+", action="extend", metavar="NAME",
              help="register only these functions (default: every top-level function not starting with _)")
    @argument("--benchmark", metavar="EXPR",
              help="benchmark input, a Python expression: a list of argument dicts or a generator function, "
                   "written as in Python (--benchmark [{'x': 2}, {'x': 3}]) or quoted whole "
                   "(--benchmark \"[{'x': 2}, {'x': 3}]\")")
    @argument("--benchmark-runs", type=int, metavar="N", help="benchmark rounds (default 10)")
    @argument("--workload", metavar="VAR", help="a notebook function computing each call's workload")
    @argument("--parallel", action="store_true", help="workers take concurrent calls (the default)")
    @argument("--serial", action="store_true", help="workers take one call at a time")
    @argument("--retries", type=int, metavar="N", help="retries for a call whose worker was lost (default 0)")
    @cell_magic
    def vast_remote(self, line: str, cell: str):
        """Run the cell, then register its functions to run on workers.

        Each registered name then holds the remote proxy (`await f(x)`,
        `f.call(x)`, `f.map(xs)`); `f.local` is the plain function. Other
        functions the cell defines ship as dependencies. If the cell raises,
        nothing is registered.
        """
        rest, benchmark = split_expression_option(strip_comment(line), "--benchmark")
        args = parse(self.vast_remote, rest)
        if args.parallel and args.serial:
            raise UsageError(f"give --parallel or --serial, not both\n{self.vast_remote.parser.format_usage().strip()}")
        parallel = True if args.parallel else (False if args.serial else None)
        ops.register_remote_cell(self.shell, self.session.target(args.app), cell, args.function,
                                 benchmark=expression_forms(benchmark) if benchmark else None,
                                 benchmark_runs=args.benchmark_runs,
                                 workload=args.workload, parallel=parallel, retries=args.retries)

    @magic_arguments()
    @argument("--app", metavar="VAR", help=APP_HELP)
    @argument("call", nargs="*", metavar="CALL ARGS",
              help='constructor arguments written like a call, e.g. model_id="model-a", size=3')
    @cell_magic
    def vast_context(self, line: str, cell: str):
        """Run the cell, then register the one async context-manager class it defines.

        The class is instantiated with CALL ARGS on each worker (never in the
        notebook); remote functions reach it with app.get_context(Class).
        """
        options, call = _app_and_call_args(strip_comment(line))
        args = parse(self.vast_context, options)
        ops.register_context_cell(self.shell, self.session.target(args.app), cell, call)

    @magic_arguments()
    @argument("--app", metavar="VAR", help=APP_HELP)
    @argument("--name", metavar="N", help="deployment name (default: the notebook's file name)")
    @argument("--tag", metavar="T", help="deployment tag (default: default)")
    @argument("--ttl", type=float, metavar="S", help="seconds the deployment lives without calls")
    @argument("--backend", choices=("local", "vast"), metavar="B", help="local (default) or vast")
    @argument("--dry-run", action="store_true", help="decide and report the tier; change and start nothing")
    @argument("--no-wait", action="store_true", help="return once applied, without waiting for ready workers")
    @argument("--timeout", type=float, metavar="S", help="seconds to wait for workers")
    @argument("--watch", action="store_true",
              help="then redeploy in the background whenever a local module file the code imports is saved, "
                   "until the next %%vast_deploy or %%vast_teardown")
    @line_magic
    def vast_deploy(self, line: str = ""):
        """Build the bundle from this notebook, decide the tier, apply it and show progress.

        Returns the DeployReport. Re-running with nothing changed is tier 0. --name, --tag, --ttl
        and --backend apply to this deploy only (calls then go to it); app.configure(name=...)
        changes them for good. Any watch an earlier --watch started stops first.
        """
        args = parse(self.vast_deploy, line)
        if args.watch and args.dry_run:
            raise UsageError(f"--watch redeploys, --dry-run changes nothing: give one of them\n"
                             f"{self.vast_deploy.parser.format_usage().strip()}")
        if args.watch:
            kernel_loop_or_raise()                 # before deploying: a watch that cannot start is an error now
        app = self.session.target(args.app)
        self.session.stop_watch()
        options = dict(name=args.name, tag=args.tag, ttl=args.ttl, backend=args.backend)
        report = ops.deploy(app, **options, dry_run=args.dry_run, wait=not args.no_wait, timeout=args.timeout)
        if args.watch:
            start_watch(self.session, app, **options, wait=not args.no_wait, timeout=args.timeout)
        return report

    @magic_arguments()
    @argument("--app", metavar="VAR", help=APP_HELP)
    @line_magic
    def vast_status(self, line: str = ""):
        """Show the deployment's endpoint and workers (a live widget in Jupyter, a snapshot in text mode)."""
        args = parse(self.vast_status, line)
        app = self.session.target(args.app)
        ops.status(app, variable=args.app or self.session.variable)

    @magic_arguments()
    @argument("--app", metavar="VAR", help=APP_HELP)
    @argument("function", nargs="?", metavar="FUNC", help="only this function's lines")
    @argument("--tail", type=int, default=200, metavar="N", help="how many recent lines (default 200)")
    @line_magic
    def vast_logs(self, line: str = ""):
        """Print recent worker log lines (output of calls that outlived their cell lands here)."""
        args = parse(self.vast_logs, line)
        app = self.session.target(args.app)
        ops.logs(app, args.function, args.tail, variable=args.app or self.session.variable)

    @magic_arguments()
    @argument("--app", metavar="VAR", help=APP_HELP)
    @argument("--all-tags", action="store_true", help="stop every tag of this deployment, not only the current one")
    @line_magic
    def vast_teardown(self, line: str = ""):
        """Stop the deployment's workers; safe to run twice (a deployment never deployed is an error)."""
        args = parse(self.vast_teardown, line)
        app = self.session.target(args.app)
        self.session.stop_watch()
        ops.teardown(app, all_tags=args.all_tags, variable=args.app or self.session.variable)


def get_session(ipython: Any) -> ops.NotebookSession:
    """The session ``%load_ext vast_magic`` created in this shell (for Python access)."""
    magics = ipython.magics_manager.registry.get(VastMagics.__name__)
    if magics is None:
        raise UsageError("vast_magic is not loaded in this shell; run %load_ext vast_magic first.")
    return magics.session


def load_ipython_extension(ipython: Any) -> None:
    """Register the magics, the ``VastMagic`` configurable and the session deployment."""
    config = VastMagic(parent=ipython)
    ipython.configurables.append(config)
    settings.set_config_source(config.lookup)
    ipython.register_magics(VastMagics(ipython, ops.NotebookSession(ipython), config))


def unload_ipython_extension(ipython: Any) -> None:
    """Remove the magics and the ``%config`` hook (``%reload_ext`` then loads afresh)."""
    manager = ipython.magics_manager
    magics = manager.registry.pop(VastMagics.__name__, None)
    if magics is None:
        return
    magics.session.stop_watch()
    for kind, names in magics.magics.items():
        for name in names:
            manager.magics[kind].pop(name, None)
    if magics.config_object in ipython.configurables:
        ipython.configurables.remove(magics.config_object)
    settings.set_config_source(None)
