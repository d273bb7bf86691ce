"""L0-09: a random number generator the training depends on is never seeded."""

from __future__ import annotations

import ast
from collections.abc import Iterator

from spml.toolkit.checks._base import APPLIES, Applicability, Check, Finding, not_applicable
from spml.toolkit.checks.patterns import Facts
from spml.toolkit.checks.project import SourceFile

ALL_RNGS = frozenset({"torch", "numpy", "random"})
# Seed every RNG at once (torch, numpy's global RNG and Python's ``random``).
SEED_ALL_ROOTS = ("lightning", "pytorch_lightning", "lightning_fabric", "transformers",
                  "accelerate")
SEED_ALL_NAMES = frozenset({"seed_everything", "set_seed", "enable_full_determinism"})
# Other libraries' seeding helpers, by canonical name, and the RNGs each one seeds (read
# from their source): timm's random_seed(seed, rank) seeds torch, numpy and random.
SEED_HELPERS: dict[str, frozenset[str]] = {
    "timm.utils.random_seed": ALL_RNGS,
    "timm.utils.random.random_seed": ALL_RNGS,
    "mmengine.runner.set_random_seed": ALL_RNGS,
    "mmengine.runner.utils.set_random_seed": ALL_RNGS,
    "detectron2.utils.env.seed_all_rng": ALL_RNGS,
}
TORCH_SEEDS = frozenset({"torch.manual_seed", "torch.random.manual_seed", "torch.cuda.manual_seed",
                         "torch.cuda.manual_seed_all"})
NUMPY_SEEDS = frozenset({"numpy.random.seed"})
RANDOM_SEEDS = frozenset({"random.seed"})
# numpy.random names that are not draws from the global RNG.
NUMPY_NOT_DRAWS = frozenset({"seed", "default_rng", "RandomState", "Generator", "PCG64",
                             "PCG64DXSM", "MT19937", "Philox", "SFC64", "SeedSequence",
                             "BitGenerator", "get_state", "set_state"})
RANDOM_NOT_DRAWS = frozenset({"seed", "Random", "SystemRandom", "getstate", "setstate"})


class MissingSeeds(Check):
    """Checks that torch's RNG, and numpy's and Python's when the code draws from them,
    are seeded.

    ## What it does
    Looks for ``torch.manual_seed`` (or ``torch.random.manual_seed``,
    ``torch.cuda.manual_seed_all``, a generator's ``manual_seed``) in every project that
    imports torch, for ``np.random.seed`` when the code draws from numpy's global RNG
    (``np.random.permutation``, ``np.random.rand``, ...), and for ``random.seed`` when it
    draws from Python's (``random.shuffle``, ``random.randint``, ...).
    ``seed_everything`` (Lightning), ``transformers.set_seed``, ``accelerate.utils.set_seed``
    and a Hugging Face ``Trainer`` (which seeds from ``TrainingArguments.seed``) seed all
    three, and so do timm's ``utils.random_seed``, mmengine's ``set_random_seed`` and
    detectron2's ``seed_all_rng``. A seed call in a project helper counts wherever it is.
    A numpy ``default_rng()`` built without a seed is flagged on its own. Any seed
    expression counts (``torch.manual_seed(1337 + rank)``).

    ## Why is this bad?
    Without seeds, weight initialisation, dropout masks, data shuffling and augmentation
    differ on every run: two runs of the same code give different curves, a regression
    cannot be told from noise, and a result cannot be reproduced for a comparison.

    ## Example
    ```python
    import random
    import torch

    random.shuffle(files)
    model = GPT(config)
    ```

    ## Use instead
    ```python
    import random
    import torch

    random.seed(1337)
    torch.manual_seed(1337)
    random.shuffle(files)
    model = GPT(config)
    ```

    ## References
    - https://pytorch.org/docs/stable/notes/randomness.html
    - https://numpy.org/doc/stable/reference/random/generated/numpy.random.default_rng.html
    """

    id = "L0-09"
    name = "missing-seeds"
    severity = "warning"
    message = "torch is imported but its RNG is never seeded"
    fix = "Seed every RNG once at start-up: torch.manual_seed, np.random.seed, random.seed"
    condition = "always"

    def applicability(self, facts: Facts) -> Applicability:
        return APPLIES if _first_import(facts, "torch") else not_applicable(
            "the project does not import torch")

    def run(self, facts: Facts) -> Iterator[Finding]:
        seeded = _seeded(facts)
        if "torch" not in seeded:
            source, node = _first_import(facts, "torch")
            yield self.finding(source, node, fix="Call torch.manual_seed(seed) once at start-up")
        draws = _draws(facts)
        if "numpy" not in seeded and draws.get("numpy"):
            source, call, name = draws["numpy"][0]
            yield self.finding(source, call, f"numpy's global RNG is used ({name}) but never "
                               "seeded", "Call np.random.seed(seed) at start-up, or draw from "
                               "np.random.default_rng(seed)")
        if "random" not in seeded and draws.get("random"):
            source, call, name = draws["random"][0]
            yield self.finding(source, call, f"Python's random module is used ({name}) but "
                               "never seeded", "Call random.seed(seed) at start-up")
        for source, call in facts.project.calls_to("numpy.random.default_rng"):
            if not call.args and not call.keywords:
                yield self.finding(source, call, "numpy Generator is created without a seed",
                                   "Pass a seed: np.random.default_rng(seed)")


def _first_import(facts: Facts, root: str) -> tuple[SourceFile, ast.AST] | None:
    # The training script first: that is where the seeding belongs.
    training = {lp.source.display for lp in facts.training_loops}
    for source in sorted(facts.project.files, key=lambda s: s.display not in training):
        imports = [n for n in ast.walk(source.tree) if isinstance(n, ast.Import | ast.ImportFrom)]
        for node in sorted(imports, key=lambda n: n.lineno):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if node.module and not node.level else [])
            if any(n == root or n.startswith(root + ".") for n in names):
                return source, node
    return None


def _seeded(facts: Facts) -> set[str]:
    """Which of torch/numpy/random some call seeds."""
    seeded: set[str] = set()
    for source, call in facts.project.calls:
        name = facts.project.call_name(source, call) or ""
        last = name.rsplit(".", 1)[-1]
        attr = call.func.attr if isinstance(call.func, ast.Attribute) else ""
        if (last in SEED_ALL_NAMES and name.split(".")[0] in SEED_ALL_ROOTS) \
                or attr == "seed_everything" or _hf_trainer(name):
            seeded |= ALL_RNGS
        elif name in SEED_HELPERS:
            seeded |= SEED_HELPERS[name]
        elif name in TORCH_SEEDS or attr == "manual_seed":
            seeded.add("torch")
        elif name in NUMPY_SEEDS:
            seeded.add("numpy")
        elif name in RANDOM_SEEDS:
            seeded.add("random")
    return seeded


def _hf_trainer(name: str) -> bool:
    """A Hugging Face (or TRL) ``Trainer`` calls ``set_seed(args.seed)`` itself."""
    return name.split(".")[0] in ("transformers", "trl") and name.endswith("Trainer")


def _draws(facts: Facts) -> dict[str, list[tuple[SourceFile, ast.Call, str]]]:
    """Calls that draw from numpy's global RNG or Python's ``random``, in file order."""
    found: dict[str, list[tuple[SourceFile, ast.Call, str]]] = {}
    for source, call in facts.project.calls:
        name = facts.project.call_name(source, call) or ""
        head, _, last = name.rpartition(".")
        if head == "numpy.random" and last not in NUMPY_NOT_DRAWS:
            found.setdefault("numpy", []).append((source, call, ast.unparse(call.func)))
        elif head == "random" and last not in RANDOM_NOT_DRAWS:
            found.setdefault("random", []).append((source, call, ast.unparse(call.func)))
    for calls in found.values():
        calls.sort(key=lambda c: (c[0].display, c[1].lineno, c[1].col_offset))
    return found
