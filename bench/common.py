"""What the benchmark scripts share: the command line as written into a committed results file."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def portable(argument: str) -> str:
    """``argument`` without the paths of this machine: the results file is committed."""
    shared = os.environ.get("XSELL_SHARED_DATA")
    shared = shared.rstrip("/") if shared else None
    if shared and (argument == shared or argument.startswith(shared + "/")):
        return "$XSELL_SHARED_DATA" + argument[len(shared):]
    if argument.startswith(str(REPO) + "/"):
        return argument[len(str(REPO)) + 1:]
    return argument


def command(script: str) -> str:
    """How ``script`` (a path from the repository root) was run, with portable arguments."""
    return shlex.join(["python", script, *map(portable, sys.argv[1:])])
