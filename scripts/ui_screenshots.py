"""Screenshots of what a Prefect user sees of spml's Auto Research loop (issue 13).

Run by hand from the repository root (needs /usr/bin/chromium: ``apt-get install chromium``)::

    .venv/bin/python scripts/ui_screenshots.py --out DIR [--keep]

It starts a real local Prefect server (``prefect server start``) with a temporary
PREFECT_HOME, builds one git repository holding two toy Auto Research experiments (`exp-a`,
`exp-b`; train.py scores ``(x - 3)^2``, the researcher is a python one-liner that sets ``x``
from a fixed list, so a round takes a second or two), runs them with ``spml autoresearch run``
against that server (exp-a twice, so it has runs ``-1`` and ``-2``), then takes headless
Chromium screenshots of the runs list, exp-a's second run, one of its rounds, the artifacts
page, exp-a's experiences artifact and a round's markdown artifact. It prints each PNG's path
with a line, read from the API, saying what the page should show. The server and the
temporary files are removed at the end (``--keep`` keeps the temporary files).

This is a manual check of the UI, not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
TOY = ROOT / "tests" / "fixtures" / "toy"
CHROMIUM = "/usr/bin/chromium"

# The researcher: round r sets x to the r-th value of its argument ("crash" exits 3).
RESEARCHER_CODE = (
    "import os, sys; r = int(os.environ['SPML_ROUND']); xs = sys.argv[1].split(','); "
    "x = xs[(r - 1) % len(xs)]; "
    "x == 'crash' and (print('researcher: no idea left, giving up'), sys.exit(3)); "
    "open('params.yaml', 'w').write('x: ' + x + chr(10)); "
    "open(os.environ['SPML_STRATEGY_FILE'], 'w').write('try x = ' + x + ' (round ' + str(r) "
    "+ ')'); print('set x to', x)"
)
# exp-a: rounds 1-2 improve (Committed), round 3 (in run -2) is worse (Rolled back).
# exp-b: round 1 improves, the researcher crashes in round 2.
PLANS = {"exp-a": "2.0,2.5,-4.0", "exp-b": "1.0,crash"}


@dataclass(frozen=True)
class Shot:
    """One screenshot: the file name, the UI path and what the page should show."""

    name: str
    path: str
    description: str
    height: int = 1000  # window height: a long page gets a taller window


def report(line: str = "") -> None:
    """Write one line for the user (the script's only output channel)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def prefect_env(home: Path, api_url: str) -> dict[str, str]:
    """The environment of the server and of the spml runs: a private PREFECT_HOME.

    The UI is told the API's address: `prefect server start --port` alone leaves the UI
    calling the default http://127.0.0.1:4200/api ("Can't connect to Server API").
    """
    return {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_ENABLED": "true", "PREFECT_UI_API_URL": api_url,
            "PREFECT_API_URL": api_url}


@contextmanager
def prefect_server(home: Path, port: int, log_path: Path) -> Iterator[str]:
    """Run `prefect server start` until the block ends; yields the API URL."""
    command = [str(VENV_BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
               "--port", str(port)]
    api_url = f"http://127.0.0.1:{port}/api"
    with log_path.open("w") as log:
        server = subprocess.Popen(command, env=prefect_env(home, api_url), stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_healthy(api_url, server, timeout_s=120.0)
        yield api_url
    finally:
        stop_group(server)


def wait_healthy(api_url: str, server: subprocess.Popen[bytes], timeout_s: float) -> None:
    """Wait until ``/health`` answers; raise if the server exits or the time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"prefect server exited with {server.returncode}")
        try:
            with urllib.request.urlopen(f"{api_url}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1.0)
    raise RuntimeError(f"prefect server did not answer {api_url}/health in {timeout_s:g}s")


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGINT the process group this script started, then SIGKILL it if it lingers."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def git(repo: Path, *args: str) -> None:
    """Run git in ``repo``."""
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def toy_protocol(plan: str) -> dict[str, Any]:
    """The protocol fields of one toy experiment (see tests/helpers.py `toy_protocol`)."""
    python = sys.executable
    return {
        "research_question": "Which x minimises the toy loss (x - 3)^2?",
        "max_rounds": 3,
        "target": None,
        "baseline": None,
        "train_command": f"{python} train.py",
        "fixed": {"files": ["train.py", "evaluate.py"], "time_limit": 10},
        "variable": {"files": ["params.yaml"], "range": "x, a real number"},
        "eval": {"command": f"{python} evaluate.py", "metric": "loss",
                 "direction": "minimize"},
        "researcher": {"kind": "command",
                       "command": f"{python} -c {shlex.quote(RESEARCHER_CODE)} {plan}",
                       "timeout": 30},
    }


def build_repo(repo: Path) -> dict[str, Path]:
    """A git repository with the toy experiments `exp-a` and `exp-b`, committed."""
    experiments = {}
    for name, plan in PLANS.items():
        exp = repo / name
        exp.mkdir(parents=True)
        for file in ("train.py", "evaluate.py", "params.yaml"):
            shutil.copy(TOY / file, exp / file)
        shutil.copy(TOY / "gitignore", exp / ".gitignore")
        fields = yaml.safe_dump(toy_protocol(plan), sort_keys=False)
        (exp / "autoresearch-protocol.md").write_text(
            f"---\n{fields}---\n# Toy experiment {name}\n\nSet x in params.yaml.\n")
        experiments[name] = exp
    (repo / "README.md").write_text("UI screenshot project\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.name", "UI Screenshots")
    git(repo, "config", "user.email", "ui@spml.invalid")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "two toy experiments")
    return experiments


def run_loop(exp: Path, max_rounds: int, env: dict[str, str], log_dir: Path) -> None:
    """`spml autoresearch run EXP --max-rounds N`; its output goes to a log file."""
    log_path = log_dir / f"{exp.name}-{max_rounds}.log"
    started = time.monotonic()
    with log_path.open("w") as log:
        result = subprocess.run([str(VENV_BIN / "spml"), "autoresearch", "run", str(exp),
                                 "--max-rounds", str(max_rounds)], cwd=exp.parent, env=env,
                                stdout=log, stderr=subprocess.STDOUT, check=False)
    report(f"  spml autoresearch run {exp.name} --max-rounds {max_rounds}: exit "
           f"{result.returncode} in {time.monotonic() - started:.0f}s (log {log_path})")


def state_text(run: Any) -> str:
    """A run's state as `Name (TYPE): message`."""
    state = run.state
    if state is None:
        return "no state"
    message = f": {state.message}" if state.message else ""
    return f"{state.name} ({state.type.value}){message}"


def collect_shots(api_url: str, exp_a: Path) -> list[Shot]:
    """Find the pages to shoot through the API, with what each should show."""
    from prefect.client.orchestration import get_client  # noqa: TID251 - a Prefect script
    from prefect.client.schemas.filters import (  # noqa: TID251
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterParentFlowRunId,
    )
    from prefect.client.schemas.sorting import ArtifactSort, FlowRunSort  # noqa: TID251
    from prefect.settings import PREFECT_API_URL, temporary_settings  # noqa: TID251

    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        runs = client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC)
        parents = [r for r in runs if r.parent_task_run_id is None]
        parent = next(r for r in parents if str(r.parameters.get("experiment_dir", "")).rstrip(
            "/").endswith(exp_a.name) and r.name.endswith("-2"))
        experiment = parent.name.removeprefix("autoresearch-").removesuffix("-2")
        rounds = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent.id])))
        round_run = next((r for r in rounds if r.state_name == "Rolled back"), rounds[0])
        artifacts = client.read_artifacts(sort=ArtifactSort.CREATED_DESC)
        round_artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[round_run.id])))
    experiences_key = f"autoresearch-experiences-{experiment}"
    experiences = [a for a in artifacts if a.key == experiences_key]
    markdown = next((a for a in round_artifacts if a.type == "markdown"), None)
    listing = "; ".join(f"{r.name} [{r.state_name}]" for r in runs)
    keys = sorted({a.key or f"(no key, {a.type})" for a in artifacts})
    shots = [
        Shot("a-runs", "/runs", f"{len(runs)} flow runs: {listing}", height=1700),
        Shot("b-parent-run", f"/runs/flow-run/{parent.id}",
             f"{parent.name}, tags {sorted(parent.tags)}, {state_text(parent)}; rounds: "
             + ", ".join(f"{r.name} [{r.state_name}]" for r in rounds), height=1400),
        Shot("c-round-run", f"/runs/flow-run/{round_run.id}",
             f"{round_run.name} of {parent.name}, tags {sorted(round_run.tags)}, "
             f"{state_text(round_run)}", height=1400),
        Shot("d-artifacts", "/artifacts", f"{len(keys)} artifact keys: {', '.join(keys)}"),
        Shot("e-experiences", f"/artifacts/key/{experiences_key}",
             f"{experiences_key}: {len(experiences)} versions, latest: "
             f"{experiences[0].description if experiences else '(none)'}"),
    ]
    if experiences:
        shots.append(Shot("e2-experiences-latest", f"/artifacts/artifact/{experiences[0].id}",
                          f"latest version of {experiences_key} (the table): "
                          f"{experiences[0].description}", height=1200))
    if markdown is not None:
        shots.append(Shot("f-round-markdown", f"/artifacts/artifact/{markdown.id}",
                          f"{markdown.key} of {round_run.name}: {markdown.description}",
                          height=1400))
    summary = next((a for a in artifacts if a.key == f"autoresearch-summary-{experiment}"), None)
    if summary is not None:  # with the plot embedded
        shots.append(Shot("g-summary", f"/artifacts/artifact/{summary.id}",
                          f"{summary.key}: {summary.description}", height=1700))
    return shots


def screenshot(url: str, png: Path, scratch: Path, height: int) -> None:
    """A headless Chromium screenshot of ``url`` (the SPA gets 15 s of virtual time)."""
    profile = Path(tempfile.mkdtemp(prefix="chromium-", dir=scratch))
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
               f"--window-size=1600,{height}", "--virtual-time-budget=15000", "--hide-scrollbars",
               f"--screenshot={png}", url]
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    shutil.rmtree(profile, ignore_errors=True)


def main() -> int:
    """Start the server, run the loops, shoot the pages, clean up."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the PNG files")
    parser.add_argument("--keep", action="store_true", help="keep the temporary files")
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"{CHROMIUM} is missing: apt-get install -y chromium")
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    scratch = Path(tempfile.mkdtemp(prefix="spml-ui-"))
    home, logs = scratch / "prefect-home", scratch / "logs"
    logs.mkdir()
    port = free_port()
    try:
        report(f"starting prefect server on port {port} (PREFECT_HOME={home})")
        with prefect_server(home, port, logs / "server.log") as api_url:
            base = api_url.removesuffix("/api")
            experiments = build_repo(scratch / "repo")
            env = prefect_env(home, api_url)
            report("running the loops")
            run_loop(experiments["exp-a"], 2, env, logs)
            run_loop(experiments["exp-b"], 2, env, logs)
            run_loop(experiments["exp-a"], 3, env, logs)
            shots = collect_shots(api_url, experiments["exp-a"])
            report("taking screenshots")
            for shot in shots:
                png = out / f"{shot.name}.png"
                screenshot(base + shot.path, png, scratch, shot.height)
                report(f"{png}\n    {base}{shot.path}\n    {shot.description}")
    finally:
        if args.keep:
            report(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    report(f"done in {time.monotonic() - started:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
