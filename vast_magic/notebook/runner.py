"""Run a notebook headless (nbclient + ipykernel) and print what each cell showed.

This is how the README's main job runs the quickstart: the same kernel a
browser would use, text display mode, output printed cell by cell.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TextIO

from ..errors import ConfigError

__all__ = ["run_notebook"]


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
    os.environ.setdefault("VAST_MAGIC_DISPLAY", "text")
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(file.parent.absolute())}})
    started = time.perf_counter()
    try:
        client.execute()
    except CellExecutionError as exc:  # pragma: no cover - allow_errors keeps going
        print(exc, file=out)
    return _print_cells(notebook, out, time.perf_counter() - started)


def _print_cells(notebook, out: TextIO, elapsed: float) -> int:
    unexpected = 0
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        lines = [line for line in cell.source.splitlines() if line.strip() and not line.startswith("# NBVAL")]
        first_line = lines[0] if lines else ""
        print(f"--- cell {index}: {first_line}", file=out)
        for output in cell.get("outputs", []):
            print(_output_text(output), end="", file=out)
            raised = output.get("output_type") == "error"
            if raised and "raises-exception" not in cell.metadata.get("tags", []):
                unexpected += 1
    print(f"--- {unexpected} unexpected errors; notebook ran in {elapsed:.1f}s", file=out)
    return unexpected
