"""GPU-machine check: two supervised attempts of the fake trainer with the NVML Xid watcher on.

Attempt 1 is SIGKILLed (environment) and attempt 2 resumes from its checkpoint and finishes;
both run with the real `NvmlXidWatcher` started around them. Prints PASS/FAIL; exit 0 on PASS.
Usage (repo root): python scripts/gpu_watchdog_supervise.py
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from spml.protocols.watchdog import load_watchdog_settings  # noqa: E402
from spml.toolkit.watchdog.gpu import make_xid_watcher  # noqa: E402
from spml.toolkit.watchdog.supervise import supervise_once  # noqa: E402


def main() -> int:
    """Run the check; 0 = PASS."""
    watcher = make_xid_watcher()
    watcher.start()
    sys.stdout.write(f"Xid watcher available: {watcher.available} {watcher.reason}\n")
    watcher.stop()
    with tempfile.TemporaryDirectory() as tmp:
        exp = Path(tmp)
        shutil.copy(REPO / "tests" / "fixtures" / "watchdog" / "fake_trainer.py", exp)
        (exp / "plan.json").write_text(json.dumps({"faults": {"1": "kill"}, "at": 8}))
        (exp / "watchdog.yaml").write_text(
            f"train_command: {sys.executable} fake_trainer.py plan.json\n"
            "checkpoint_glob: ckpt/step_*.json\nlog_file: train.log\nhang_timeout: 5\n"
            "startup_grace: 1\npoll_interval: 0.1\nrestart_delay: 0\n")
        settings = load_watchdog_settings(exp, {})
        first = supervise_once(settings, exp)
        second = supervise_once(settings, exp)
        resumes = (exp / "resumes.log").read_text()
        sys.stdout.write(f"attempt 1: {first.diagnosis}\nattempt 2 finished: "
                         f"{second.finished}\n{resumes}")
        ok = (first.diagnosis is not None and first.diagnosis.kind == "environment"
              and second.finished and "resume_step=5" in resumes)
    sys.stdout.write("PASS\n" if ok else "FAIL\n")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
