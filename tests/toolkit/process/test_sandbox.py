"""The bwrap confinement of the shared runner (`spml.toolkit.process.sandbox`), with real
commands under the real bwrap; and the protocol's `sandbox:` / `holdout:` sections."""

from __future__ import annotations

import os
import socket
import sys
import threading
from pathlib import Path

import pytest
from pydantic import ValidationError

from spml.protocols.experiences import Experiences, parse_experiences
from spml.protocols.sandbox import HoldoutSpec, SandboxSpec
from spml.toolkit.process import ExitKind, run_command
from spml.toolkit.process.sandbox import Confinement, unavailable_reason

needs_bwrap = pytest.mark.skipif(bool(unavailable_reason()),
                                 reason=f"no sandbox here: {unavailable_reason()}")


def _run(tmp_path: Path, script: str, confinement: Confinement):
    return run_command([sys.executable, "-c", script], cwd=tmp_path / "work",
                       log_dir=tmp_path / "logs", name="boxed", confine=confinement,
                       time_limit_s=30)


@pytest.fixture
def box(tmp_path: Path) -> Confinement:
    for name in ("work", "tmp", "sealed"):
        (tmp_path / name).mkdir()
    (tmp_path / "sealed" / "secret.txt").write_text("the answer\n")
    (tmp_path / "sealed-file.txt").write_text("the other answer\n")
    return Confinement(writable=(tmp_path / "work",), tmpdir=tmp_path / "tmp",
                       sealed=(tmp_path / "sealed", tmp_path / "sealed-file.txt"))


@needs_bwrap
def test_writes_only_where_allowed(tmp_path, box):
    script = (f"import os, pathlib\n"
              f"open('inside.txt', 'w').write('ok')\n"
              f"open(os.path.join(os.environ['TMPDIR'], 't'), 'w').write('ok')\n"
              f"open({str(tmp_path / 'outside.txt')!r}, 'w').write('no')\n")
    result = _run(tmp_path, script, box)
    assert result.kind is ExitKind.FAILED
    assert "Read-only file system" in result.stderr_path.read_text()
    assert (tmp_path / "work" / "inside.txt").read_text() == "ok"
    assert (tmp_path / "tmp" / "t").read_text() == "ok"
    assert not (tmp_path / "outside.txt").exists()


@needs_bwrap
def test_sealed_paths_read_as_empty(tmp_path, box):
    script = (f"import os\nprint(os.listdir({str(tmp_path / 'sealed')!r}))\n"
              f"try:\n    print(repr(open({str(tmp_path / 'sealed-file.txt')!r}).read()))\n"
              f"except PermissionError:\n    print('denied')\n")
    result = _run(tmp_path, script, box)
    assert result.ok, result.stderr_path.read_text()
    assert result.stdout_text().split() == ["[]", "denied"]  # an empty folder; no read
    assert (tmp_path / "sealed" / "secret.txt").read_text() == "the answer\n"  # untouched


@needs_bwrap
def test_no_network_when_asked(tmp_path, box):
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    threading.Thread(target=lambda: server.accept(), daemon=True).start()
    script = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=5)\n"
    try:
        assert _run(tmp_path, script, box).ok  # the network as it is
        offline = Confinement(writable=box.writable, tmpdir=box.tmpdir, network=False)
        result = _run(tmp_path, script, offline)
        assert result.kind is ExitKind.FAILED
        assert "ConnectionRefused" in result.stderr_path.read_text()
    finally:
        server.close()


def test_the_sandbox_section_reads_short_and_long_forms():
    assert SandboxSpec.model_validate("off").mode == "off"
    assert SandboxSpec.model_validate(False).mode == "off"  # YAML reads a bare off as false
    assert SandboxSpec.model_validate(True).mode == "on"
    spec = SandboxSpec.model_validate({"writable": ["~/.claude"], "network": False})
    assert (spec.mode, spec.writable, spec.network) == ("auto", ["~/.claude"], False)
    with pytest.raises(ValidationError, match="must be absolute or start with ~"):
        SandboxSpec.model_validate({"writable": ["cache"]})
    with pytest.raises(ValidationError, match="mode"):
        SandboxSpec.model_validate("sometimes")


def test_holdout_paths_stay_inside_the_experiment():
    assert HoldoutSpec(paths=["data/test"], command="python ev.py").paths == ["data/test"]
    for bad in ("/data/test", "../test", "."):
        with pytest.raises(ValidationError, match="must lie inside the experiment"):
            HoldoutSpec(paths=[bad], command="python ev.py")


def test_the_ledger_header_keeps_the_sandbox_and_holdout_lines():
    ledger = Experiences(metric="loss", max_rounds=3, sandbox="UNCONFINED: no bwrap",
                         holdout="best 1 (n=1) vs baseline 2 (n=1): gain +1")
    text = ledger.render()
    assert "sandbox: UNCONFINED: no bwrap\n" in text
    parsed = parse_experiences(text)
    assert (parsed.sandbox, parsed.holdout) == (ledger.sandbox, ledger.holdout)


@needs_bwrap
def test_no_capabilities_no_host_processes_no_unmounting_a_seal(tmp_path, box):
    """What root could otherwise do inside (this machine runs the tests as root)."""
    script = (
        "import os, subprocess\n"
        "print(open('/proc/self/status').read().split('CapEff:')[1].split()[0])\n"
        f"print({os.getpid()} in [int(p) for p in os.listdir('/proc') if p.isdigit()])\n"
        f"print(subprocess.run(['umount', {str(tmp_path / 'sealed')!r}]).returncode != 0)\n"
        f"print(os.listdir({str(tmp_path / 'sealed')!r}))\n")
    result = _run(tmp_path, script, box)
    assert result.ok, result.stderr_path.read_text()
    assert result.stdout_text().split() == ["0000000000000000", "False", "True", "[]"]


@needs_bwrap
def test_dev_shm_is_private_and_agent_sockets_are_gone(tmp_path, box, monkeypatch):
    monkeypatch.setenv("SSH_AUTH_SOCK", "/run/user/0/ssh-agent.sock")
    script = ("import os\nopen('/dev/shm/spml-left-behind', 'w').write('x')\n"
              "print(os.environ.get('SSH_AUTH_SOCK'), os.listdir('/run/user') "
              "if os.path.isdir('/run/user') else [])\n")
    result = _run(tmp_path, script, box)
    assert result.ok, result.stderr_path.read_text()
    assert result.stdout_text().split() == ["None", "[]"]
    assert not Path("/dev/shm/spml-left-behind").exists()
