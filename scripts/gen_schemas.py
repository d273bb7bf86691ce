"""Regenerate the committed JSON Schemas of spml's protocol files (and the pipeline documents).

Run after any change to the protocol models; tests/protocols/test_schema_current.py fails
while the committed file and the models disagree::

    python scripts/gen_schemas.py          # write spml/protocols/schemas/*.schema.json
    python scripts/gen_schemas.py --check  # exit 1 when a committed schema is out of date
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from spml.protocols import autoresearch, design, iteration, plan

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "spml" / "protocols" / "schemas"
SCHEMAS: dict[str, Callable[[], dict[str, Any]]] = {
    "autoresearch.schema.json": autoresearch.protocol_json_schema,
    "iteration.schema.json": iteration.protocol_json_schema,
    "design.schema.json": design.design_json_schema,
    "plan.schema.json": plan.plan_json_schema,
}


def render_schema(schema: dict[str, Any]) -> str:
    """The committed text of a schema: sorted keys, indent 2, trailing newline."""
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def expected_files() -> dict[str, str]:
    """File name -> the text it must hold."""
    return {name: render_schema(build()) for name, build in SCHEMAS.items()}


def main(argv: list[str] | None = None) -> int:
    """Write (or with ``--check`` compare) every schema; the exit status of the script."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="only report out-of-date schemas (exit 1 when there are any)")
    args = parser.parse_args(argv)
    stale = []
    for name, text in expected_files().items():
        path = SCHEMA_DIR / name
        current = path.read_text(encoding="utf-8") if path.is_file() else None
        if current == text:
            continue
        stale.append(name)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    verb = "out of date, run python scripts/gen_schemas.py" if args.check else "written"
    sys.stderr.write("".join(f"{SCHEMA_DIR / name}: {verb}\n" for name in stale))
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
