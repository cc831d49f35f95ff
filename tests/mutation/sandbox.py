"""A scratch copy of the checkout to break on purpose: the tests run the agent as a subprocess
from `fence_xenapi.py` beside them, so a planted bug or a mutant must live in that file, and
never in the checkout a developer (or another helper) is working in."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parent.parent.parent


def checkout_files(root: Path = ROOT) -> list[str]:
    """Tracked files and new ones not ignored: what the work tree holds, uncommitted edits
    included."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], cwd=root, capture_output=True, check=True)
    return [name for name in listed.stdout.decode().split("\0")
            if name and (root / name).is_file()]


def copy_checkout(target: Path, root: Path = ROOT) -> Path:
    """Copy the checkout's files into `target` (modes kept), with .venv pointing at the
    checkout's environment."""
    for name in checkout_files(root):
        destination = target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, destination)
    venv = root / ".venv"
    if venv.exists() and not (target / ".venv").exists():
        (target / ".venv").symlink_to(venv.resolve())
    return target


@contextlib.contextmanager
def scratch_copy(root: Path = ROOT) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="fx-mutation-") as scratch:
        yield copy_checkout(Path(scratch) / "checkout", root)
