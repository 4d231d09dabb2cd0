"""Write the shipped notebooks from their cell lists and run them to save real outputs.

`python notebooks/build.py [NAME ...]` regenerates quickstart/tiers/errors.ipynb
(or only the named ones), executes each on the local engine in a temporary
VAST_MAGIC_HOME (text display, as CI runs them) and saves them with outputs;
the quickstart's Vast section runs against a ``vast_magic.testing.VastBox``
(nbval skips it). Cells whose output nbval compares carry
`# NBVAL_CHECK_OUTPUT` (or the `nbval-check-output` tag when the first line
is a cell magic). A cell that fails on purpose catches its one error class
and prints the message, which nbval compares: a tolerated error
(`raises-exception`) would pass with any error, or none. Paths of this machine in the outputs (the repository,
the temporary home, the Python installation) are written relative, so a saved
notebook names none.
"""
from __future__ import annotations

import os
import sys
import sysconfig
import tempfile
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
RAISES = "raises-exception"
SKIP = "nbval-skip"
CHECK = "nbval-check-output"   # as the NBVAL_CHECK_OUTPUT comment, for cells whose first line must be a magic
NEEDS_VAST = "needs-vast"   # run-notebook runs these only when VAST_API_KEY or VAST_MAGIC_VAST_URL is set


def md(text: str):
    return nbformat.v4.new_markdown_cell(text.strip())


def code(text: str, *tags: str):
    cell = nbformat.v4.new_code_cell(text.strip())
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


SETUP = code('''
%load_ext vast_magic
from vast_magic import Deployment, Secret

app = Deployment(name="{name}")
app.image("vastai/base-image:@vastai-automatic-tag", storage=16).env(MODE="demo")
app.configure_autoscaling(max_workers=2)
''')

CONTEXT = code('''
%%vast_context --app app model_id="tiny-model"
class Model:
    """Loaded once per worker (think: model weights), never in the notebook."""
    def __init__(self, model_id):
        self.model_id = model_id

    async def __aenter__(self):
        self.scale = 1
        return self

    async def __aexit__(self, *exc):
        return False
''')


def remote_cell(body: str) -> object:
    return code(f'''
%%vast_remote --app app --benchmark '[{{"x": 2}}, {{"x": 3}}]' --benchmark-runs 3
def _shift(x):
    return x  # a helper: shipped with square, not registered itself

async def square(x):
    model = app.get_context(Model)
    print(f"worker squaring {{x}} with {{model.model_id}}")
    {body}
''')


DEPLOY = code("report = %vast_deploy --app app")


def check(source: str):
    return code("# NBVAL_CHECK_OUTPUT\n" + source.strip())


QUICKSTART = [
    md('''
# vast_magic quickstart

Define a worker context and a remote function in cells, deploy them, call them.
Everything runs on the embedded **local engine** (worker processes on this
machine); the last section shows the same cells on Vast.ai.
'''),
    SETUP,
    CONTEXT,
    remote_cell("return _shift(x) * x * model.scale"),
    md("A function that `yield`s is a remote generator: its items stream back while the worker runs (think: "
       "the tokens of a model, or the progress of a long job)."),
    code('''
%%vast_remote --app app
async def countdown(n):
    for i in range(n, 0, -1):
        yield f"{i}..."
    yield "liftoff"
'''),
    md("Deploy: the cells' code is captured, bundled and hashed; a worker starts, enters `Model`, benchmarks `square`, and is ready."),
    code('''
report = %vast_deploy --app app
print("tier", report.tier, report.reasons, "workers", len(report.workers))
'''),
    md("Call it like a local coroutine. What the function prints shows up here."),
    check("await square(5)"),
    check("square.map([1, 2, 3, 4])"),
    md("`spawn` starts a call and returns a handle at once: `.result(timeout)`, `await handle`, `.done()`, "
       "`.cancel()`. Its id finds the call again with `app.get_call(id)`, from another cell or after a kernel "
       "restart, for as long as the engine keeps the result (an hour after it finished, the newest 1,000)."),
    check('''
handle = square.spawn(7)
print(handle.result(timeout=60), app.get_call(handle.id).done())
'''),
    md("`stream` consumes a remote generator item by item (`for x in countdown.stream(3)` works in sync code too)."),
    check("[x async for x in countdown.stream(3)]"),
    md("Edit the function and deploy again: only the code changed, so workers are replaced one by one (tier 2)."),
    remote_cell("return _shift(x) * x * model.scale + 1000"),
    DEPLOY,
    check('print("tier", report.tier, report.reasons)\nprint(await square(5))'),
    md("An autoscaling change keeps the same workers (tier 1); an unchanged deploy does nothing (tier 0)."),
    code("app.configure_autoscaling(max_workers=3)\nscaled = %vast_deploy --app app\nunchanged = %vast_deploy --app app"),
    check('print("tier", scaled.tier, scaled.reasons)\nprint("tier", unchanged.tier, unchanged.reasons)'),
    code("%vast_status --app app"),
    code("%vast_teardown --app app"),
]

#: The quickstart's last section: the same cells with ``backend="vast"``. nbval skips them (they need an
#: account, or the box); ``build.py`` runs them against a ``VastBox`` and tests/testing/test_box.py runs
#: exactly these cells in a kernel pointed at one.
VAST_SECTION = [
    md('''
## The same cells on Vast.ai

Only the deployment changes. With an account, set `VAST_API_KEY` first. Without one, point the kernel at
the loopback **box** (`vast_magic.testing.VastBox`, see the README): Vast's control plane on 127.0.0.1
whose workers are the official Vast worker, running on this machine. The outputs below come from the box;
there, `preview_offers()` finds no GPU offer (the box lists only this machine) and the box runs the worker
here anyway. nbval skips these cells.
'''),
    code('''
from vast_magic.query import gpu_ram, gpu_name, RTX_4090, H100_SXM

app = Deployment(name="quickstart", backend="vast", ttl=3600)   # key and URLs: VAST_API_KEY, VAST_MAGIC_VAST_URL...
image = app.image("vastai/base-image:@vastai-automatic-tag", storage=32)
image.require(gpu_ram >= 24, gpu_name.in_([RTX_4090, H100_SXM]))
image.preview_offers()                       # how many offers match, and their price range
'''),
    CONTEXT,
    remote_cell("return _shift(x) * x * model.scale"),
    code('''
report = %vast_deploy --app app
print("tier", report.tier, report.backend_action, "workers", len(report.workers))
'''),
    code("await square(5)                              # routed by Vast's autoscaler to a worker"),
    code("%vast_status --app app"),
    code("%vast_logs --app app"),
    code("%vast_teardown --app app"),
]
QUICKSTART += [code(c.source, SKIP, NEEDS_VAST) if c.cell_type == "code" else c for c in VAST_SECTION]

TIERS = [
    md("# The five update tiers\n\n`%vast_deploy` deploys the smallest change that makes the workers run what the cells say."),
    SETUP,
    code('def show(report):\n    print("tier", report.tier, "|", "; ".join(report.reasons) or "no changes")'),
    CONTEXT,
    remote_cell("return x * x * model.scale"),
    DEPLOY, check("show(report)   # tier 4: a new deployment"),
    DEPLOY, check("show(report)   # tier 0: nothing changed, nothing restarted"),
    code("app.configure_autoscaling(max_workers=3)"),
    DEPLOY, check("show(report)   # tier 1: same workers, new scaling"),
    remote_cell("return x * x * model.scale  # a comment-only edit changes nothing"),
    DEPLOY, check("show(report)   # still tier 0"),
    remote_cell("return x * x * model.scale + 1"),
    DEPLOY, check("show(report)   # tier 2: code changed, rolling replacement\nprint(await square(3))"),
    code('app.image("vastai/base-image:@vastai-automatic-tag", storage=16).env(MODE="fast")'),
    DEPLOY, check("show(report)   # tier 3: environment changed, every worker replaced"),
    code('app.tag = "v2"'),
    DEPLOY, check('show(report)   # tier 4: a new tag is a new endpoint; "default" keeps serving'),
    code("%vast_teardown --app app --all-tags"),
]


def caught(error: str, body: str, before: str = ""):
    """A cell that fails on purpose, catches the one error class it is about and prints its message;
    nbval compares that output, so another class, another message, or no error at all fails the test."""
    indented = "\n".join("    " + line for line in body.strip().splitlines())
    lines = ["# NBVAL_CHECK_OUTPUT", before.strip(), f"try:\n{indented}",
             f"except {error} as exc:\n    print(f\"{{type(exc).__name__}}: {{exc}}\")"]
    return code("\n".join(line for line in lines if line))


def usage_error(source: str):
    """A cell magic that refuses its input: IPython prints ``UsageError: <message>`` (no traceback) and nbval
    compares that line. The tag, not a comment, asks for the check: a cell magic's first line is the magic."""
    return code(source, CHECK)


ERRORS = [
    md("# Common mistakes and what vast_magic says\n\nEach cell below fails on purpose and prints what vast_magic "
       "says; the message says how to fix it. The errors are ordinary Python exceptions, caught by class "
       "(`from vast_magic import ConfigError, ...`)."),
    SETUP,
    code("from IPython.core.error import UsageError\nfrom vast_magic import CaptureError, ConfigError"),
    caught("AttributeError", "q.gpu_rma >= 24   # a typo in a column name", "import vast_magic.query as q"),
    caught("ConfigError", "app.image('vastai/base-image:@vastai-automatic-tag').require(gpu_ram >= 'lots')",
           "from vast_magic.query import gpu_ram"),
    caught("ConfigError", "app.configure_autoscaling(target_util=1.5)"),
    usage_error("%%vast_remote --app app\nx = 1   # no function in this cell"),
    md("`--benchmark` is a Python expression, written as in Python or quoted whole; when neither evaluates, "
       "the message shows both ways."),
    usage_error('''
%%vast_remote --app app --benchmark [{'x': one}]
async def triple(x):
    return 3 * x
'''),
    code('''
%%vast_remote --app app --benchmark [{'x': 1}]
async def double(x):
    return 2 * x
'''),
    caught("ConfigError", "await double(2)   # calling before the first deploy"),
    caught("TypeError", "double.call(1, 2)   # wrong arguments fail before anything is sent"),
    code('''
%%vast_remote --app app
async def broken(x):
    return x + undefined_thing
'''),
    caught("CaptureError", "%vast_deploy --app app   # undefined names are found before deploying"),
    md("A remote function must ship as source. One made inside another function, holding that call's "
       "variables (a closure), has no source that defines it: capture says so before anything is built."),
    caught("CaptureError", '''
closures.remote(benchmark_dataset=[{"x": 1}])(make_scaler(3))
closures.ensure_ready(dry_run=True)
''', '''
def make_scaler(k):
    async def scaled(x):
        return k * x
    return scaled

closures = Deployment(name="errors-closure")
'''),
    code('''
%%vast_remote --app app
async def broken(x):
    if x < 0:
        raise ValueError(f"x must be >= 0, got {x}")
    return x
'''),
    code("report = %vast_deploy --app app"),
    md("Status, logs and teardown of a deployment that does not exist say so, with the known ones closest "
       "first (a typo used to look like a success)."),
    caught("UsageError", "%vast_teardown --app typo", "typo = Deployment(name='erors')"),
    code('''
# NBVAL_CHECK_OUTPUT
import subprocess, sys
done = subprocess.run([sys.executable, "-m", "vast_magic", "status", "erors"], capture_output=True, text=True)
print(done.stderr, "exit status", done.returncode)
'''),
    md("An error raised on the worker is raised here with its type (a `RemoteValueError` is a `ValueError`), "
       "its message and the worker's traceback; uncaught, the notebook shows that traceback."),
    code('''
# NBVAL_CHECK_OUTPUT
try:
    await broken(-2)
except ValueError as exc:          # remote errors keep their type
    print(type(exc).__name__, exc.remote_message)
    print(*exc.remote_traceback.splitlines()[-2:], sep="\\n")   # where it was raised, on the worker
'''),
    caught("ConfigError", '''
vast.remote(benchmark_dataset=[{'x': 1}])(double.local)
vast.ensure_ready(dry_run=True)   # no API key
''', "vast = Deployment(name='errors', backend='vast')"),
    code("%vast_teardown --app app"),
]


def write_and_run(name: str, cells: list, deployment: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [code(c.source.replace("{name}", deployment), *c.metadata.get("tags", [])) if c.cell_type == "code"
                else c for c in cells]
    NotebookClient(nb, timeout=300, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(HERE)}}).execute()
    unexpected = [c.source.splitlines()[0] for c in nb.cells if c.cell_type == "code" and RAISES not in
                  c.metadata.get("tags", []) and any(o.output_type == "error" for o in c.outputs)]
    missing = [c.source.splitlines()[0] for c in nb.cells if RAISES in c.metadata.get("tags", [])
               and not any(o.output_type == "error" or "UsageError" in o.get("text", "") for o in c.outputs)]
    _write_relative_paths(nb)
    nbformat.write(nb, HERE / f"{name}.ipynb")
    print(f"{name}.ipynb: {len(nb.cells)} cells; unexpected errors {unexpected}; expected errors missing {missing}")


def _write_relative_paths(nb) -> None:
    """Tracebacks name files of this machine: write them relative to the repository, the home, Python."""
    paths = sysconfig.get_paths()
    replacements = [(str(HERE.parent) + "/", ""), (os.environ["VAST_MAGIC_HOME"] + "/", "$VAST_MAGIC_HOME/"),
                    (paths["purelib"] + "/", "<site-packages>/"), (paths["stdlib"] + "/", "<python>/")]

    def scrub(text: str) -> str:
        for old, new in replacements:
            text = text.replace(old, new)
        return text

    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if "text" in output:
                output["text"] = scrub(output["text"])
            if "traceback" in output:
                output["traceback"] = [scrub(line) for line in output["traceback"]]
            if "evalue" in output:
                output["evalue"] = scrub(output["evalue"])
            for kind, value in output.get("data", {}).items():
                if kind.startswith("text/") and isinstance(value, str):
                    output["data"][kind] = scrub(value)


NOTEBOOKS = {"quickstart": QUICKSTART, "tiers": TIERS, "errors": ERRORS}


def main(names: list[str] | None = None) -> int:
    from vast_magic.testing import VastBox

    os.environ["VAST_MAGIC_DISPLAY"] = "text"
    unknown = [name for name in names or [] if name not in NOTEBOOKS]
    if unknown:
        print(f"unknown notebook(s) {', '.join(unknown)}; choose from {', '.join(NOTEBOOKS)}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="vast-magic-nb-") as root:
        homes = []
        try:
            for name in names or NOTEBOOKS:
                # each notebook in its own home: what one lists (e.g. known deployments) must not depend on
                # which notebooks ran before it here (nbval runs errors.ipynb first, in a fresh home)
                home = os.path.join(root, name)
                os.makedirs(home, mode=0o700)
                homes.append(home)
                os.environ["VAST_MAGIC_HOME"] = home
                if name == "quickstart":
                    with VastBox() as box:     # the quickstart's Vast section runs against the box
                        os.environ.update(box.env())
                        write_and_run(name, NOTEBOOKS[name], name)
                        for key in box.env():
                            del os.environ[key]
                else:
                    write_and_run(name, NOTEBOOKS[name], name)
        finally:
            from vast_magic.backends.local import launcher
            for home in homes:
                launcher.engine_stop(Path(home))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
