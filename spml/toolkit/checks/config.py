"""Find and read ``[tool.spml.validate]`` (like ruff: the nearest pyproject.toml upwards)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import ValidationError

from spml.errors import ProtocolError
from spml.protocols.validate import ValidateConfig


def find_pyproject(start: Path) -> Path | None:
    try:
        start = start.resolve()
    except (OSError, RuntimeError):  # a symlink loop: collect_files names it clearly
        start = start.absolute()
    for folder in [start, *start.parents] if start.is_dir() else start.parents:
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def load_config(path: Path | None) -> tuple[ValidateConfig, Path | None]:
    """The validate config in ``path`` (a pyproject.toml) and its folder, or defaults."""
    if path is None:
        return ValidateConfig(), None
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ProtocolError(f"{path}: cannot read TOML: {exc}") from None
    table = data.get("tool", {}).get("spml", {}).get("validate", {})
    try:
        return ValidateConfig.model_validate(table), path.parent.resolve()
    except ValidationError as exc:
        raise ProtocolError(f"{path} [tool.spml.validate]: {describe(exc)}") from None


def describe(exc: ValidationError) -> str:
    """``field.path: problem; ...`` for a pydantic error, without pydantic's prefixes."""
    return "; ".join(
        f"{'.'.join(map(str, e['loc'])) or 'table'}: {e['msg'].removeprefix('Value error, ')}"
        for e in exc.errors(include_url=False))
