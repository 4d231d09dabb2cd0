"""Run a notebook headless (nbclient + ipykernel) and print what each cell showed.

This is how the README's main job runs the quickstart: the same kernel a
browser would use, text display mode, output printed cell by cell. Cells tagged
``needs-vast`` (the quickstart's Vast.ai section) run only when the environment
says where Vast is (``VAST_API_KEY`` or ``VAST_MAGIC_VAST_URL``): the main job is
the local engine's, and a machine with no account must pass it.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Mapping, TextIO

from ..errors import ConfigError

__all__ = ["NEEDS_VAST", "VAST_VARIABLES", "vast_skip_reason", "run_notebook"]

NEEDS_VAST = "needs-vast"
VAST_VARIABLES = ("VAST_API_KEY", "VAST_MAGIC_VAST_URL")


def vast_skip_reason(environ: Mapping[str, str]) -> str | None:
    """Why cells tagged ``needs-vast`` are skipped in this environment, or None when they run.

    Only an explicit variable counts: a key saved by ``vastai set api-key`` alone does not make a
    headless run of the quickstart spend money on Vast."""
    if any(environ.get(name) for name in VAST_VARIABLES):
        return None
    return ("skipped: needs Vast.ai; set VAST_API_KEY (an account) or VAST_MAGIC_VAST_URL "
            "(e.g. the loopback VastBox, see the README) to run it")


def _output_text(output: dict) -> str:
    kind = output.get("output_type")
    if kind == "stream":
        return output.get("text", "")
    if kind in ("execute_result", "display_data"):
        return output.get("data", {}).get("text/plain", "") + "\n"
    if kind == "error":
        return "\n".join(output.get("traceback", [])) + "\n"
    return ""


def run_notebook(path: str | os.PathLike, *, timeout: float = 600.0, out: TextIO = sys.stdout) -> int:
    """Execute every cell; print sources and outputs; return the number of cells that raised unexpectedly."""
    try:
        import nbformat
        from nbclient import NotebookClient
        from nbclient.exceptions import CellExecutionError
    except ImportError as exc:  # pragma: no cover - dev extra missing
        raise ConfigError("Running notebooks needs nbclient and ipykernel: pip install -e '.[dev]'.") from exc
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"{path} does not exist; pass the path of a .ipynb file.")
    notebook = nbformat.read(file, as_version=4)
    skipped = _drop_cells_needing_vast(notebook, vast_skip_reason(os.environ))
    os.environ.setdefault("VAST_MAGIC_DISPLAY", "text")
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(file.parent.absolute())}})
    started = time.perf_counter()
    try:
        client.execute()
    except CellExecutionError as exc:  # pragma: no cover - allow_errors keeps going
        print(exc, file=out)
    notebook.cells.extend(skipped)
    notebook.cells.sort(key=lambda cell: cell.metadata["_index"])
    return _print_cells(notebook, out, time.perf_counter() - started)


def _drop_cells_needing_vast(notebook, reason: str | None) -> list:
    """Take the ``needs-vast`` cells out of the notebook when ``reason`` says they cannot run.

    Every cell is numbered first (``metadata._index``) so the skipped ones print in their place;
    their stored outputs are cleared so nothing recorded elsewhere is shown as this run's."""
    for index, cell in enumerate(notebook.cells):
        cell.metadata["_index"] = index
    if reason is None:
        return []
    skipped = [cell for cell in notebook.cells if NEEDS_VAST in cell.metadata.get("tags", [])]
    for cell in skipped:
        cell.metadata["_skipped"] = reason
        if cell.cell_type == "code":
            cell.outputs = []
    notebook.cells = [cell for cell in notebook.cells if "_skipped" not in cell.metadata]
    return skipped


def _print_cells(notebook, out: TextIO, elapsed: float) -> int:
    unexpected = 0
    skipped = 0
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        lines = [line for line in cell.source.splitlines() if line.strip() and not line.startswith("# NBVAL")]
        first_line = lines[0] if lines else ""
        print(f"--- cell {cell.metadata['_index']}: {first_line}", file=out)
        if "_skipped" in cell.metadata:
            said = cell.metadata["_skipped"] if not skipped else "skipped: needs Vast.ai (see above)"
            skipped += 1
            print(f"    {said}", file=out)
            continue
        for output in cell.get("outputs", []):
            print(_output_text(output), end="", file=out)
            raised = output.get("output_type") == "error"
            if raised and "raises-exception" not in cell.metadata.get("tags", []):
                unexpected += 1
    note = f", {skipped} cells skipped (needs Vast.ai)" if skipped else ""
    print(f"--- {unexpected} unexpected errors{note}; notebook ran in {elapsed:.1f}s", file=out)
    return unexpected
