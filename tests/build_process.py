"""``synth build`` as a child process, for tests that SIGKILL it whole and then resume it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def build_command(manifest: Path | str, out: Path | str) -> tuple[list[str], dict[str, str]]:
    """(argv, env) of ``synth build MANIFEST -o OUT --workers 2`` from this checkout."""
    cmd = [sys.executable, "-m", "synth", "build", str(manifest), "-o", str(out)]
    cmd += ["--workers", "2", "--no-progress"]
    return cmd, {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


def start_build(cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
    """Start the build in a session of its own, so ``os.killpg(p.pid, ...)`` also stops its
    Dask workers; its stderr is piped for the failure message."""
    return subprocess.Popen(
        cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
