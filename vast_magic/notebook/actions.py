"""What the magics do: the plain functions every magic delegates to, and the notebook session they act on.

Magics only parse their line; everything they do is here, callable from
Python with the same effect. A cell handed to ``%%vast_remote`` or
``%%vast_context`` runs through ``shell.run_cell`` exactly like a normal cell
(tracebacks, output, displayhook); only when it ran cleanly are its functions
or class registered, so a failing cell never changes the deployment.
"""
from __future__ import annotations

import ast
import inspect
import re
import warnings
import weakref
from pathlib import Path
from typing import Any, Iterable, Mapping

from IPython.core.error import UsageError

from ..capture import is_deployment
from ..display import show_status
from ..events import format_event
from ..known import unknown_deployment

__all__ = [
    "SESSION_VARIABLE", "notebook_name", "session_variable", "NotebookSession", "parse_env", "set_image",
    "run_cell_or_raise", "parse_cell", "top_level_names", "choose_functions", "BENCHMARK_QUOTING",
    "evaluate_benchmark", "remote_options", "register_remote_cell", "parse_call_args", "register_context_cell",
    "deploy", "check_known", "status", "logs", "teardown"
]

_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")

#: the notebook variable that holds the session deployment (the one magics use without --app)
SESSION_VARIABLE = "vast_app"
_SESSION_APPS: "weakref.WeakSet" = weakref.WeakSet()   # every session deployment a session bound, any shell


# -- the session deployment -------------------------------------------------------
def notebook_name(user_ns: Mapping[str, Any]) -> str:
    """The session deployment's name: the notebook file's stem, else ``notebook`` (with a warning)."""
    for key in ("__session__", "__vsc_ipynb_file__"):
        path = user_ns.get(key)
        if isinstance(path, str) and path.strip():
            name = _UNSAFE_NAME_CHARS.sub("-", Path(path).stem).strip("-.")[:100]
            if name:
                return name
    warnings.warn("vast_magic could not tell this notebook's file name (no __session__ or __vsc_ipynb_file__); "
                  "the session deployment is called 'notebook'. Use %vast_deploy --name NAME to choose one.",
                  UserWarning, stacklevel=2)
    return "notebook"


def session_variable(user_ns: Mapping[str, Any], deployment: Any) -> str:
    """The variable to bind the session deployment to: ``vast_app``, unless it holds something that is not
    a session deployment (the user's own value is never overwritten); then ``vast_app_2``, ``vast_app_3``..."""
    def free(name: str) -> bool:
        value = user_ns.get(name)
        return name not in user_ns or value is deployment or value in _SESSION_APPS
    number = 1
    while not free(name := SESSION_VARIABLE if number == 1 else f"{SESSION_VARIABLE}_{number}"):
        number += 1
    return name


class NotebookSession:
    """What ``%load_ext vast_magic`` sets up: the shell and its session ``Deployment``.

    The session deployment is what magics without ``--app`` act on; it is bound in the notebook as
    ``vast_app`` (see ``session_variable``) so it can be configured and called from Python too.
    """

    def __init__(self, shell: Any):
        self.shell = shell
        self._app = None
        self.variable: str | None = None
        self.watch = None              # the NotebookWatch of the last %vast_deploy --watch, if any

    def stop_watch(self) -> None:
        """End the watch ``%vast_deploy --watch`` started (the next deploy or teardown does; the deployment
        keeps serving)."""
        if self.watch is not None:
            self.watch.stop()
            self.watch = None

    @property
    def app(self):
        """Created on first use, so a notebook that only uses ``--app VAR`` never sees the naming warning."""
        if self._app is None:
            from ..deployment import Deployment
            self._bind(Deployment(name=notebook_name(self.shell.user_ns)))
        return self._app

    @app.setter
    def app(self, deployment: Any) -> None:
        """Make ``deployment`` the one the magics act on (e.g. one built with a test transport)."""
        if not is_deployment(deployment):
            raise UsageError(f"the session deployment must be a vast_magic Deployment, not {type(deployment).__name__}.")
        self._bind(deployment)

    def _bind(self, deployment: Any) -> None:
        """Hold ``deployment`` and put it in the notebook under a free name; say which, in this cell's output."""
        variable = session_variable(self.shell.user_ns, deployment)
        taken = self.shell.user_ns.get(SESSION_VARIABLE) if variable != SESSION_VARIABLE else None
        self._app, self.variable = deployment, variable
        _SESSION_APPS.add(deployment)
        self.shell.user_ns[variable] = deployment
        note = (f"{SESSION_VARIABLE} already holds a {type(taken).__name__} of yours, so " if variable != SESSION_VARIABLE
                else "")
        print(f"vast_magic: {note}this notebook's deployment {deployment.effective_name!r} is `{variable}` "
              f"(magics without --app use it; e.g. {variable}.configure(name=...), {variable}.status())")

    def target(self, var: str | None = None):
        """The session deployment, or the ``Deployment`` held in notebook variable ``var``."""
        if var is None:
            return self.app
        if var not in self.shell.user_ns:
            raise UsageError(f"--app {var}: there is no variable {var!r} in the notebook; "
                             f"create it first, e.g. {var} = Deployment(name=...).")
        value = self.shell.user_ns[var]
        if not is_deployment(value):
            raise UsageError(f"--app {var}: {var} is a {type(value).__name__}, not a vast_magic Deployment.")
        return value


# -- image -------------------------------------------------------------------------
def parse_env(pairs: Iterable[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.isidentifier():
            raise UsageError(f"--env {pair!r}: write environment variables as KEY=VALUE (KEY a valid name).")
        env[key] = value
    return env


def set_image(app: Any, image: str, storage: float | None = None, pip: Iterable[str] = (),
              apt: Iterable[str] = (), env: Mapping[str, str] | None = None, require: Iterable[str] = ()):
    """``app.image(...)`` plus the chained steps; ``require`` holds query strings like ``gpu_ram >= 24``."""
    queries = list(require)
    if queries:
        from ..query import parse_requirement
        parsed = [parse_requirement(text) for text in queries]
    result = app.image(image) if storage is None else app.image(image, storage=storage)
    pip, apt = list(pip), list(apt)
    if pip:
        result.pip_install(*pip)
    if apt:
        result.apt_get(*apt)
    if env:
        result.env(**env)
    if queries:
        result.require(*parsed)
    return result


# -- running cells -----------------------------------------------------------------
def _quiet(error: BaseException, magic: str) -> BaseException:
    """The cell's own traceback is already shown: re-raise it as one line, not a second traceback."""
    line = f"%%{magic}: nothing was registered because the cell raised {type(error).__name__} (see above)."
    try:
        error._render_traceback_ = lambda: [line]  # type: ignore[attr-defined]
    except AttributeError:  # pragma: no cover - exceptions without a __dict__
        pass
    return error


def run_cell_or_raise(shell: Any, cell: str, magic: str) -> None:
    """Run ``cell`` like a normal cell; if it failed, raise its exception so this cell fails too."""
    result = shell.run_cell(cell)
    error = result.error_before_exec or result.error_in_exec
    if error is not None:
        raise _quiet(error, magic)


def parse_cell(shell: Any, cell: str, magic: str) -> ast.Module:
    """The cell's AST after IPython syntax (``!cmd``, ``%magic``) is transformed; a syntax error shows as usual."""
    try:
        return ast.parse(shell.transform_cell(cell))
    except SyntaxError:
        run_cell_or_raise(shell, cell, magic)  # shows the SyntaxError like a normal cell, then raises it
        raise  # pragma: no cover - run_cell always reports the error


def top_level_names(tree: ast.Module, kinds: tuple[type, ...]) -> list[str]:
    names: list[str] = []
    for node in tree.body:
        if isinstance(node, kinds) and node.name not in names:
            names.append(node.name)
    return names


#: how to write --benchmark, shown when what was written does not work
BENCHMARK_QUOTING = ("write it as in Python, --benchmark [{'x': 2}, {'x': 3}], or quoted whole, "
                     "--benchmark \"[{'x': 2}, {'x': 3}]\" (a generator function: --benchmark make_inputs)")


def _forms(expression: str | Iterable[str] | None) -> tuple[str, ...]:
    """The texts ``--benchmark`` may mean, in the order to try (see magics.expression_forms)."""
    if expression is None:
        return ()
    return (expression,) if isinstance(expression, str) else tuple(expression)


def _referenced_names(expression: str | Iterable[str] | None) -> set[str]:
    """The names the benchmark expression uses (a generator defined in the cell is a helper, not a remote)."""
    forms, names, parsed = _forms(expression), set(), False
    for form in forms:
        try:
            tree = ast.parse(form, mode="eval")
        except SyntaxError:
            continue
        parsed = True
        names |= {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    if forms and not parsed:
        raise UsageError(f"--benchmark {forms[-1]!r} is not a Python expression; {BENCHMARK_QUOTING}.")
    return names


def evaluate_benchmark(user_ns: dict, expression: str | Iterable[str]) -> Any:
    """The first form of the expression that evaluates in the notebook; else a UsageError with the quoting."""
    forms, failures = _forms(expression), []
    for form in forms:
        try:
            return eval(form, user_ns)  # noqa: S307 - the user's own expression, in their namespace
        except Exception as exc:
            failures.append(f"{type(exc).__name__}: {exc}")
    raise UsageError(f"--benchmark {forms[-1]!r} failed: {failures[-1]}; {BENCHMARK_QUOTING}.")


def choose_functions(tree: ast.Module, requested: Iterable[str] | None, helpers: set[str]) -> list[str]:
    """The functions a ``%%vast_remote`` cell registers: ``--function`` names, else its public top-level defs."""
    defined = top_level_names(tree, (ast.FunctionDef, ast.AsyncFunctionDef))
    if requested:
        requested = list(dict.fromkeys(requested))
        missing = [name for name in requested if name not in defined]
        if missing:
            raise UsageError(f"--function {' '.join(missing)}: the cell defines no top-level function "
                             f"{', '.join(missing)}; it defines: {', '.join(defined) or 'none'}.")
        return requested
    chosen = [name for name in defined if not name.startswith("_") and name not in helpers]
    if not chosen:
        raise UsageError("%%vast_remote: the cell defines no public top-level function to register; define one, "
                         "e.g. `def square(x): return x * x` (names starting with _ are shipped only as helpers).")
    return chosen


def remote_options(user_ns: dict, *, benchmark: str | Iterable[str] | None = None, benchmark_runs: int | None = None,
                   workload: str | None = None, parallel: bool | None = None, retries: int | None = None) -> dict:
    """Turn magic arguments into ``app.remote(**options)``, looking values up in the notebook.

    ``benchmark`` is an expression, or the forms it may have been meant as (tried in order)."""
    options: dict[str, Any] = {}
    if benchmark is not None:
        value = evaluate_benchmark(user_ns, benchmark)
        key = "benchmark_generator" if callable(value) else "benchmark_dataset"
        options[key] = value
    if workload is not None:
        calculator = user_ns.get(workload)
        if not callable(calculator):
            raise UsageError(f"--workload {workload}: there is no function {workload!r} in the notebook; "
                             "define the workload calculator before this cell or in it.")
        options["workload_calculator"] = calculator
    for key, value in (("benchmark_runs", benchmark_runs), ("allow_parallel_requests", parallel), ("retries", retries)):
        if value is not None:
            options[key] = value
    return options


def _live_function(user_ns: Mapping[str, Any], name: str):
    value = user_ns.get(name)
    value = getattr(value, "__vast_magic_wrapped__", value)  # re-running a cell re-registers the plain function
    if not inspect.isfunction(value):
        raise UsageError(f"%%vast_remote: after the cell ran, {name} is a {type(value).__name__}, not a plain "
                         "function (a decorator replaced it?); register it with --function on an undecorated def.")
    return value


def register_remote_cell(shell: Any, app: Any, cell: str, functions: Iterable[str] | None = None,
                         **magic_options: Any) -> dict[str, Any]:
    """Run ``cell`` and register its functions on ``app``; each name in the notebook becomes the remote proxy.

    ``magic_options`` are those of ``remote_options``. Nothing is registered
    unless the cell ran and every function accepted its options.
    """
    from ..remote import validate_options

    tree = parse_cell(shell, cell, "vast_remote")
    helpers = _referenced_names(magic_options.get("benchmark")) | {magic_options.get("workload")}
    names = choose_functions(tree, functions, helpers)
    if magic_options.get("benchmark") is not None and len(names) > 1:
        raise UsageError(f"--benchmark applies to one function but the cell registers {', '.join(names)}; "
                         "pick it with --function NAME (put the others in their own cell).")
    run_cell_or_raise(shell, cell, "vast_remote")
    options = remote_options(shell.user_ns, **magic_options)
    plain = {name: _live_function(shell.user_ns, name) for name in names}
    for fn in plain.values():
        validate_options(fn, **options)  # all or nothing: check every function before registering any
    proxies = {name: app.remote(**options)(fn) for name, fn in plain.items()}
    shell.user_ns.update(proxies)
    return proxies


# -- contexts ----------------------------------------------------------------------
def parse_call_args(user_ns: dict, text: str) -> tuple[tuple, dict]:
    """``model_id="m", size=3`` -> ((), {"model_id": "m", "size": 3}), evaluated in the notebook namespace."""
    if not text.strip():
        return (), {}
    try:
        code = compile(f"__vast_magic_call__({text})", "<%%vast_context arguments>", "eval")
    except SyntaxError as exc:
        raise UsageError(f"%%vast_context {text!r}: not valid call arguments ({exc.msg}); "
                         'write them like a call, e.g. model_id="model-a", size=3.') from None
    collect = lambda *args, **kwargs: (args, kwargs)  # noqa: E731
    try:
        return eval(code, user_ns, {"__vast_magic_call__": collect})  # noqa: S307 - user's own arguments
    except Exception as exc:
        raise UsageError(f"%%vast_context {text!r} failed: {type(exc).__name__}: {exc}") from None


def _is_async_context(value: Any) -> bool:
    return inspect.isclass(value) and hasattr(value, "__aenter__") and hasattr(value, "__aexit__")


def register_context_cell(shell: Any, app: Any, cell: str, call_args: str = "") -> type:
    """Run ``cell`` and register the one async context-manager class it defines, with ``call_args``."""
    args, kwargs = parse_call_args(shell.user_ns, call_args)
    tree = parse_cell(shell, cell, "vast_context")
    run_cell_or_raise(shell, cell, "vast_context")
    names = [n for n in top_level_names(tree, (ast.ClassDef,)) if _is_async_context(shell.user_ns.get(n))]
    if not names:
        raise UsageError("%%vast_context: the cell defines no async context-manager class; define one class "
                         "with `async def __aenter__(self): return self` and "
                         "`async def __aexit__(self, *exc): return False`.")
    if len(names) > 1:
        raise UsageError(f"%%vast_context: the cell defines {len(names)} context classes ({', '.join(names)}); "
                         "put each in its own %%vast_context cell so each gets its own arguments.")
    return app.context(*args, **kwargs)(shell.user_ns[names[0]])


# -- deploying and operating -------------------------------------------------------
def deploy(app: Any, *, name: str | None = None, tag: str | None = None, ttl: float | None = None,
           backend: str | None = None, dry_run: bool = False, wait: bool = True, timeout: float | None = None):
    """``%vast_deploy``: ``app.ensure_ready`` with the flags' name/tag/ttl/backend for this deploy only
    (checked like the constructor's; ``app.configure(...)`` changes them for good). Returns the DeployReport."""
    snapshot = app._snapshot(name=name, tag=tag, ttl=ttl, backend=backend)
    return app._ensure_ready_as(snapshot, dry_run=dry_run, wait=wait, timeout=timeout)


def check_known(app: Any, magic: str, all_tags: bool = False, variable: str | None = None) -> None:
    """Status, logs or teardown of a deployment its backend does not know (never deployed, a typo in a
    name) is a UsageError listing the known ones, closest first, instead of an empty success."""
    where = app._snapshot()
    tag = None if all_tags else where.tag
    hint = (f"Deploy it first (%vast_deploy), or act on another: --app VAR, or "
            f"{variable or 'app'}.configure(name=..., tag=...).")
    message = unknown_deployment(where.name, tag, app._known_deployments(), where.backend, hint)
    if message:
        raise UsageError(f"%{magic}: {message}")


def status(app: Any, mode: str | None = None, variable: str | None = None):
    """``%vast_status``: show the status (a live widget, or one text snapshot) and return it."""
    check_known(app, "vast_status", variable=variable)
    snapshot = app.status()
    show_status(snapshot, mode=mode, refresh=app.status)
    return snapshot


def logs(app: Any, function: str | None = None, tail: int = 200, variable: str | None = None) -> list:
    """``%vast_logs``: print the recent worker log lines and return them."""
    check_known(app, "vast_logs", variable=variable)
    lines = app.logs(function, tail)
    for line in lines:
        print(format_event(line))
    if not lines:
        print(f"no log lines for {app.effective_name}" + (f" function {function}" if function else ""))
    return lines


def teardown(app: Any, all_tags: bool = False, variable: str | None = None) -> None:
    """``%vast_teardown``: stop the workers and say what was stopped (again is fine while its logs are
    kept; a name no backend knows is a UsageError)."""
    check_known(app, "vast_teardown", all_tags=all_tags, variable=variable)
    app.teardown(all_tags=all_tags)
    print(f"{app.effective_name}: torn down ({'all tags' if all_tags else 'tag ' + app.tag})")
