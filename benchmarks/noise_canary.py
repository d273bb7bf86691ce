"""The canary: does a loop keep noise as progress? Greedy (one run, any gain) vs the default.

The canary project's only knob does nothing: every version scores 0.50 plus noise (sigma ~0.01,
half fixed by the seed, half run-to-run). A researcher makes 30 changes that do nothing, then
one real +5 sigma change (round 31). Each loop runs on the engine without Prefect
(`tests/helpers.drive`: the flow's round sequence, real git and subprocesses), once per noise
draw (`--salts`), and this prints per acceptance mode:

- false keeps: null changes committed in rounds 1..30;
- reported best after round 30, and its inflation over the truth (0.50) in sigmas;
- whether round 31's real change was committed;
- train+eval runs (baseline, candidates, incumbent top-ups, the final confirmation) and wall time.

Run by hand: `python benchmarks/noise_canary.py [--salts 0 1 2]`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

from fixtures.canary.project import SIGMA, TRUTH, make_canary  # noqa: E402
from helpers import drive  # noqa: E402

from spml.protocols.experiences import KEPT, parse_experiences  # noqa: E402
from spml.toolkit.loop.experiment import Experiment  # noqa: E402
from spml.toolkit.loop.measurement import load_measurement  # noqa: E402

MODES = {"greedy": {"mode": "greedy"}, "default": None}


def runs_spent(exp: Path) -> int:
    """Every train+eval run the loop made (rounds, top-ups, confirmation)."""
    state = Experiment.locate(exp, "autoresearch-protocol.md").state_dir
    files = [*state.glob("rounds/*/*.json"), *state.glob("confirm/*.json")]
    found = (load_measurement(f.parent, f.name) for f in files)
    return sum(len(m.seeds) for m in found if m is not None)


def one_loop(mode: str, salt: str) -> dict[str, float]:
    import os

    os.environ["CANARY_SALT"] = salt
    with tempfile.TemporaryDirectory() as tmp:
        exp = make_canary(Path(tmp), {31: 5}, max_rounds=30, acceptance=MODES[mode])
        started = time.perf_counter()
        drive(exp)
        after_null = parse_experiences((exp / "experiences.md").read_text())
        drive(exp, max_rounds=31)
        wall = time.perf_counter() - started
        final = parse_experiences((exp / "experiences.md").read_text())
        best = after_null.best_value
        assert best is not None
        return {"false_keeps": sum(r.verdict in KEPT for r in after_null.rows
                                   if 1 <= r.round <= 30),
                "best": best, "inflation": (best - TRUTH) / SIGMA,
                "real_kept": float(any(r.round == 31 and r.verdict in KEPT for r in final.rows)),
                "runs": runs_spent(exp), "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--salts", nargs="+", default=["0", "1", "2"],
                        help="noise draws (CANARY_SALT), one loop per mode each")
    args = parser.parse_args()
    print(f"canary: truth {TRUTH}, sigma {SIGMA:.4f}; 30 null changes then +5 sigma; "
          f"salts {' '.join(args.salts)}")
    print(f"{'mode':8} {'salt':>4} {'false keeps':>11} {'best@30':>8} {'inflation':>9} "
          f"{'real kept':>9} {'runs':>5} {'wall s':>7}")
    for mode in MODES:
        results = [one_loop(mode, salt) for salt in args.salts]
        for salt, r in zip(args.salts, results, strict=True):
            print(f"{mode:8} {salt:>4} {r['false_keeps']:>11.0f} {r['best']:>8.4f} "
                  f"{r['inflation']:>+8.2f}s {'yes' if r['real_kept'] else 'no':>9} "
                  f"{r['runs']:>5.0f} {r['wall_s']:>7.1f}")
        med = {k: statistics.median(r[k] for r in results) for k in results[0]}
        print(f"{mode:8} {'med':>4} {med['false_keeps']:>11.1f} {med['best']:>8.4f} "
              f"{med['inflation']:>+8.2f}s {med['real_kept']:>9.1f} {med['runs']:>5.0f} "
              f"{med['wall_s']:>7.1f}")


if __name__ == "__main__":
    main()
