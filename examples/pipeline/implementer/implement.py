"""The demo's scripted implementer: stands in for a coding agent in `spml develop`.

`python implement.py --subtask N --attempt K --workdir DIR` writes subtask N's code and tests
(from solutions/N) into DIR. Its first try at the integration subtask (3) is a draft that does
not write the step time to its log file, so L0 fails (L0-20 under SPML's profile) and the fix
loop calls it again with the report; the second try is the finished training script. A real
agent reads the prompt file (`{prompt_file}`) instead; this script prints the report it got.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

SOLUTIONS = Path(__file__).resolve().parent / "solutions"
DRAFTS = {3: "3-draft"}  # subtask -> the folder its first attempt copies over the solution


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subtask", type=int, required=True)
    parser.add_argument("--attempt", type=int, required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--prompt-file", type=Path)
    args = parser.parse_args()
    source = SOLUTIONS / str(args.subtask)
    if not source.is_dir():
        raise SystemExit(f"ERROR: no scripted solution for subtask {args.subtask}")
    if args.prompt_file and "report" in args.prompt_file.read_text(encoding="utf-8"):
        print(f"fixing subtask {args.subtask} after a failed level (attempt {args.attempt})")
    shutil.copytree(source, args.workdir, dirs_exist_ok=True)
    draft = DRAFTS.get(args.subtask)
    if draft and args.attempt == 1:
        shutil.copytree(SOLUTIONS / draft, args.workdir, dirs_exist_ok=True)
    written = sorted(p.relative_to(source).as_posix() for p in source.rglob("*.py"))
    print(f"subtask {args.subtask} attempt {args.attempt}: wrote {', '.join(written)}"
          + (" (draft)" if draft and args.attempt == 1 else ""))


if __name__ == "__main__":
    main()
