"""Named crash points for testing resume after `kill -9` at exact moments.

A test sets ``SPML_CRASH_AT=<point>`` (optionally ``<point>@<round>``) in a supervisor's
environment; when that point is reached the process SIGKILLs itself, as a power cut or the OOM
killer would. Unset, a crash point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

ENV_VAR = "SPML_CRASH_AT"


def crash_point(name: str, round_no: int | None = None) -> None:
    """Die here with SIGKILL if the environment asks for it."""
    wanted = os.environ.get(ENV_VAR)
    if not wanted:
        return
    point, _, at_round = wanted.partition("@")
    if point == name and (not at_round or at_round == str(round_no)):
        os.kill(os.getpid(), signal.SIGKILL)
