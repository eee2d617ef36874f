"""Where a model came from: the code's git commit, recorded by training and by export."""

from __future__ import annotations

import subprocess


def git_commit() -> dict:
    """{"commit": sha or None, "dirty": uncommitted changes to tracked files}."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], capture_output=True, text=True, check=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {
        "commit": git("rev-parse", "HEAD") or None,
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
    }
