"""Does the GPU work inside the sandbox? Runs one CUDA matmul and one NVML query through the
shared runner, unconfined and confined, and prints both outcomes. For a machine with a GPU
(prints "no GPU" and exits 0 elsewhere).

Usage: python benchmarks/gpu_sandbox_check.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from spml.toolkit.process import run_command
from spml.toolkit.process.sandbox import Confinement, unavailable_reason

PROBE = """
import torch, pynvml
pynvml.nvmlInit()
handle = pynvml.nvmlDeviceGetHandleByIndex(0)
x = torch.randn(4096, 4096, device="cuda")
torch.cuda.synchronize()
print("cuda", torch.cuda.get_device_name(0), float((x @ x).sum()) == float((x @ x).sum()))
print("nvml", pynvml.nvmlDeviceGetName(handle), pynvml.nvmlDeviceGetMemoryInfo(handle).total)
"""


def main() -> None:
    try:
        import torch
        if not torch.cuda.is_available():
            print("no GPU")
            return
    except ImportError:
        print("no torch")
        return
    if unavailable_reason():
        raise SystemExit(f"no sandbox here: {unavailable_reason()}")
    with tempfile.TemporaryDirectory() as root:
        work, tmp = Path(root) / "work", Path(root) / "tmp"
        work.mkdir()
        tmp.mkdir()
        for name, confine in (("unconfined", None),
                              ("confined", Confinement(writable=(work,), tmpdir=tmp))):
            result = run_command([sys.executable, "-c", PROBE], cwd=work, log_dir=Path(root),
                                 name=name, confine=confine, time_limit_s=120)
            print(f"{name}: {result.describe()}")
            print(result.stdout_text().strip() or result.stderr_path.read_text()[-2000:])


if __name__ == "__main__":
    main()
