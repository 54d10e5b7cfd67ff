"""The flags ``setup.py`` builds the planner's C files with (``SAME_BITS``), read from the file
(importing setup.py would run it), and the machine's C compiler: for the tests that build those
files themselves."""

from __future__ import annotations

import ast
import shutil

from tests.conftest import REPO


def setup_py_same_bits() -> tuple[str, ...]:
    tree = ast.parse((REPO / "setup.py").read_text(encoding="utf-8"))
    return tuple(
        next(
            ast.literal_eval(n.value)
            for n in tree.body
            if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "SAME_BITS"
        )
    )


def c_compiler() -> str:
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc is not None, "no C compiler (pip install needs one to build the C pass)"
    return cc
