"""Writing a new protocol file (`spml autoresearch create`, `spml iteration create`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from spml.errors import ProtocolError
from spml.protocols import iteration
from spml.protocols.autoresearch import PROTOCOL_FILENAME, AutoresearchProtocol, load_protocol
from spml.protocols.frontmatter import dump_front_matter
from spml.toolkit.files import write_atomic
from spml.toolkit.loop.researchers.optuna_search import read_params

BODY = """# Autoresearch protocol

Background for the researcher: what the model does, what has been tried, what to avoid.
The researcher sees this text in every round brief (never the fields above).
"""


def suggest_space(params: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A starting search space around the current values of a params file."""
    space: dict[str, dict[str, Any]] = {}
    for name, value in params.items():
        if isinstance(value, bool):
            space[name] = {"type": "categorical", "choices": [True, False]}
        elif isinstance(value, int) and value > 0:
            space[name] = {"type": "int", "low": max(1, value // 4), "high": value * 4}
        elif isinstance(value, float) and value > 0:
            space[name] = {"type": "float", "low": value / 10, "high": value * 10, "log": True}
    return space


def researcher_settings(kind: str, exp_dir: Path, command: str | None,
                        params_file: str | None) -> dict[str, Any]:
    """The `researcher:` section for a command or optuna researcher."""
    if kind == "command":
        if not command:
            raise ProtocolError("researcher.command must be given for a command researcher "
                                "(--researcher-command 'my-agent --prompt {prompt_file}').")
        return {"kind": "command", "command": command}
    if not params_file:
        raise ProtocolError("researcher.params_file must be given for an optuna researcher "
                            "(--params-file params.yaml).")
    space = suggest_space(read_params(exp_dir / params_file))
    if not space:
        raise ProtocolError(f"{params_file} must hold numeric parameters to search over, got "
                            "none. Add them, or edit the space in the protocol by hand.")
    return {"kind": "optuna", "params_file": params_file, "sampler": "tpe", "seed": 0,
            "space": space}


def write_protocol(exp_dir: Path, fields: dict[str, Any]) -> Path:
    """Validate ``fields`` and write them as a new protocol file in ``exp_dir``."""
    path = exp_dir / PROTOCOL_FILENAME
    if path.exists():
        raise ProtocolError(f"{path} already exists; edit it, or remove it to start over.")
    AutoresearchProtocol.model_validate(fields)
    write_atomic(path, f"---\n{dump_front_matter(fields)}---\n\n{BODY}")
    load_protocol(path)  # the file as written must load back
    return path


ITERATION_BODY = """# ml-iteration protocol

Initial hints for the researcher: what to try first, what must not change. The researcher sees
this text in every round brief, with the review criteria above.
"""


def write_iteration_protocol(exp_dir: Path, fields: dict[str, Any]) -> Path:
    """Validate ``fields`` and write them as a new `iteration-protocol.md` in ``exp_dir``."""
    path = exp_dir / iteration.PROTOCOL_FILENAME
    if path.exists():
        raise ProtocolError(f"{path} already exists; edit it, or remove it to start over.")
    iteration.IterationProtocol.model_validate(fields)
    write_atomic(path, f"---\n{dump_front_matter(fields)}---\n\n{ITERATION_BODY}")
    iteration.load_protocol(path)  # the file as written must load back
    return path
