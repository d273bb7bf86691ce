"""Search efficiency of the optuna researcher's samplers on a synthetic 3-parameter task.

The task stands in for a training run: a smooth, deterministic score (higher is better, an
accuracy in (0, 0.95]) of lr (log-float), width (int, step 8) and dropout (float), whose best
dropout grows with the width. Its optimum is 0.95 at lr=3e-3, width=128, dropout=0.2.

Each run drives the real `OptunaResearcher` as the loop does, with a real SQLite study and a new
researcher object per call (as a restarted supervisor): round 0 tells the baseline (the params
file as shipped: lr=0.01, width=32, dropout=0.0, score 0.318) as the study's first trial, then
each of `--rounds` rounds proposes -> reads the params file it wrote -> scores it -> observes the
score. "Best" is the best score of the baseline and the rounds, as the loop's incumbent would be;
the baseline is not one of the rounds (12 rounds = 13 evaluations). Prints, per sampler, the
median best over the seeds with min and max, and the time a propose took (the sampler's ask plus
the study's SQLite round trip): median and max over all rounds (the first GP ask of a process
also imports torch), and the median of the last round's (with --rounds 50: the ask with 50
trials in the study).

    python benchmarks/search_efficiency.py                        # 12 rounds, seeds 0..4
    python benchmarks/search_efficiency.py --rounds 50 --seeds 1  # ask timings at 50 trials
    python benchmarks/search_efficiency.py --samplers auto gp:4   # gp with startup_trials=4
    python benchmarks/search_efficiency.py --batch 4              # 4 candidates per batch

With ``--batch K`` the rounds go in batches of K (`parallel: {candidates: K}`): K asks against
the same study, each with its own params file (a candidate's worktree), its siblings' trials
still RUNNING; then the K values are told. Equal rounds = equal candidate counts.

A sampler is auto/tpe/gp/random/cmaes, optionally `:N` for startup_trials=N.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
from pathlib import Path
from typing import Any

from spml.protocols.researchers import OptunaResearcherSpec
from spml.toolkit.loop.researchers import ResearchContext
from spml.toolkit.loop.researchers.optuna_search import (
    OptunaResearcher,
    chosen_sampler,
    read_params,
)

SPACE: dict[str, Any] = {
    "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
    "width": {"type": "int", "low": 8, "high": 256, "step": 8},
    "dropout": {"type": "float", "low": 0.0, "high": 0.5},
}
BASELINE = "lr: 0.01\nwidth: 32\ndropout: 0.0\nepochs: 10\n"


def score(lr: float, width: int, dropout: float) -> float:
    """The synthetic task: 0.95 at the optimum, falling off smoothly (a Gaussian bump in
    log10(lr), log2(width) and dropout), narrow enough that 12 random draws rarely land near
    the top."""
    lr_gap = math.log10(lr) - math.log10(3e-3)          # decades away from the best lr
    width_gap = math.log2(width) - math.log2(128)       # doublings away from the best width
    best_dropout = 0.1 + 0.2 * width / 256              # wider nets want more dropout
    loss = 0.5 * lr_gap**2 + 0.2 * width_gap**2 + 10 * (dropout - best_dropout) ** 2
    return 0.95 * math.exp(-loss)


def _context(root: Path, work: Path, round_no: int,
             batch: tuple[int, ...] = ()) -> ResearchContext:
    round_dir = root / "rounds" / str(round_no)
    round_dir.mkdir(parents=True)
    return ResearchContext(round_no=round_no, workdir=work, brief_path=round_dir / "brief.md",
                           strategy_path=round_dir / "strategy.txt",
                           log_dir=round_dir / "logs", timeout_s=60.0, batch=batch)


def run(spec: OptunaResearcherSpec, rounds: int, batch: int = 1) -> tuple[float, list[float]]:
    """One search: the best score (baseline included) and each round's propose seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        works = [root / f"work-{slot}" for slot in range(batch)]
        for work in works:
            work.mkdir()
            (work / "params.yaml").write_text(BASELINE)

        def researcher(slot: int = 0) -> OptunaResearcher:
            return OptunaResearcher(spec, storage_path=root / "optuna.db",
                                    direction="maximize", workdir=works[slot])

        best = _score_file(works[0] / "params.yaml")
        researcher().observe(0, best, committed=True)
        seconds = []
        for first in range(1, rounds + 1, batch):
            rounds_of_batch = tuple(range(first, min(first + batch, rounds + 1)))
            for slot, round_no in enumerate(rounds_of_batch):
                context = _context(root, works[slot], round_no,
                                   rounds_of_batch if batch > 1 else ())
                seconds.append(researcher(slot).propose(context).duration_s)
            values = [_score_file(works[slot] / "params.yaml")
                      for slot in range(len(rounds_of_batch))]
            for round_no, value in zip(rounds_of_batch, values, strict=True):
                researcher().observe(round_no, value, committed=value > best)
            best = max(best, *values)
        return best, seconds


def _score_file(path: Path) -> float:
    params = read_params(path)
    return score(params["lr"], params["width"], params["dropout"])


def _spec(sampler: str, seed: int) -> OptunaResearcherSpec:
    name, _, startup = sampler.partition(":")
    fields = {"kind": "optuna", "params_file": "params.yaml", "sampler": name, "seed": seed,
              "space": SPACE, "startup_trials": int(startup) if startup else None}
    return OptunaResearcherSpec.model_validate(fields)


def report(sampler: str, seeds: int, rounds: int, batch: int = 1) -> None:
    """Run every seed with one sampler and print one line."""
    bests, seconds, last = [], [], []
    for seed in range(seeds):
        best, times = run(_spec(sampler, seed), rounds, batch)
        bests.append(best)
        seconds.extend(times)
        last.append(times[-1])
    label = sampler if not sampler.startswith("auto") else \
        f"{sampler} (-> {chosen_sampler(_spec(sampler, 0))})"
    print(f"{label:<18} {statistics.median(bests):>11.3f} {min(bests):>6.3f} "
          f"{max(bests):>6.3f} {statistics.median(seconds):>10.3f} {max(seconds):>8.3f} "
          f"{statistics.median(last):>7.3f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12, help="rounds after the baseline")
    parser.add_argument("--seeds", type=int, default=5, help="sampler seeds 0..N-1")
    parser.add_argument("--samplers", nargs="+", default=["auto", "tpe", "random"])
    parser.add_argument("--batch", type=int, default=1, help="candidates per batch")
    args = parser.parse_args()
    print(f"synthetic task, optimum 0.95, baseline {_score_file_text(BASELINE):.3f}; "
          f"best of baseline + {args.rounds} rounds, seeds 0..{args.seeds - 1}, "
          f"batches of {args.batch}")
    print(f"{'sampler':<18} {'median best':>11} {'min':>6} {'max':>6} "
          f"{'propose s':>10} {'max s':>8} {'last s':>7}")
    for sampler in args.samplers:
        report(sampler, args.seeds, args.rounds, args.batch)


def _score_file_text(text: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "params.yaml"
        path.write_text(text)
        return _score_file(path)


if __name__ == "__main__":
    main()
