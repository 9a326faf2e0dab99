"""`kesu init` and `kesu run` as an administrator would use them."""
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import TEST_PASSPHRASE, kesu_cli


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def env(tmp_path):
    return {"KESU_INSTANCE": str(tmp_path / "inst"), "KESU_KEY_KDF": "interactive",
            "KESU_INTAKE_PORT": str(free_port()), "KESU_BACKOFFICE_PORT": str(free_port())}


def test_init_is_idempotent_and_fails_clearly(env):
    no_tty = kesu_cli("init", env=env, input="")
    assert no_tty.returncode != 0 and "KESU_KEY_PASSPHRASE" in no_tty.stderr
    first = kesu_cli("init", env={**env, "KESU_KEY_PASSPHRASE": TEST_PASSPHRASE})
    assert first.returncode == 0 and "created" in first.stderr, first.stderr
    # No organisation contact yet: said at init (and `kesu status` names it until set).
    assert "no person to reach" in first.stderr and "KESU_ORG_PHONE" in first.stderr
    contact = {"KESU_ORG_NAME": "Support Centre", "KESU_ORG_PHONE": "03-0000-0000", "KESU_ORG_EMAIL": "help@example.org"}
    again = kesu_cli("init", env={**env, **contact, "KESU_KEY_PASSPHRASE": TEST_PASSPHRASE})
    assert again.returncode == 0 and "up to date" in again.stderr and "no person to reach" not in again.stderr
    wrong = kesu_cli("init", env={**env, "KESU_KEY_PASSPHRASE": "not the passphrase"})
    assert wrong.returncode != 0 and "wrong key passphrase" in wrong.stderr
    secrets = Path(env["KESU_INSTANCE"]) / "secrets"
    assert all(oct(p.stat().st_mode & 0o777) == "0o600" for p in secrets.iterdir())
    assert not any(TEST_PASSPHRASE.encode() in p.read_bytes()
                   for p in Path(env["KESU_INSTANCE"]).rglob("*") if p.is_file())


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_until(check, timeout=90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False


def children_of(pid):
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def test_run_serves_both_apps_and_stops_cleanly(env):
    full = {**os.environ, **env, "KESU_KEY_PASSPHRASE": TEST_PASSPHRASE}
    kesu = str(Path(sys.executable).with_name("kesu"))
    proc = subprocess.Popen([kesu, "run"], env=full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    intake = f"http://127.0.0.1:{env['KESU_INTAKE_PORT']}"
    office = f"http://127.0.0.1:{env['KESU_BACKOFFICE_PORT']}"
    try:
        assert wait_until(lambda: _up(office) and get(office + "/login")[0] == 200), proc.poll()
        status, body = get(intake + "/api/v1/key")
        assert status == 200 and b"public_key" in body
        assert get(intake + "/login")[0] == 404          # the back office is not behind the intake port
        assert get(office + "/api/v1/key")[0] == 404
        children = children_of(proc.pid)
        assert len(children) >= 5                        # redis, 2 workers, scheduler, 2 servers

        # A worker that dies and a Redis that dies are started again; the intake never stops.
        def cmdline(pid):
            try:
                return Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                return b""
        worker = next(c for c in children if b"crawl" in cmdline(c) and b"worker" in cmdline(c))
        redis_pid = next(c for c in children if b"redis-server" in cmdline(c))
        os.kill(worker, signal.SIGKILL)
        os.kill(redis_pid, signal.SIGKILL)
        assert wait_until(lambda: any(b"crawl" in cmdline(c) and b"worker" in cmdline(c)
                                      for c in children_of(proc.pid) if c != worker), 60)
        assert wait_until(lambda: any(b"redis-server" in cmdline(c) for c in children_of(proc.pid) if c != redis_pid), 30)
        assert get(intake + "/api/v1/key")[0] == 200
        children = children_of(proc.pid)

        # A second `kesu run` finds the ports taken and says so.
        second = kesu_cli("run", env={**env, "KESU_KEY_PASSPHRASE": TEST_PASSPHRASE}, timeout=60)
        assert second.returncode != 0 and "is taken" in second.stderr

        proc.send_signal(signal.SIGINT)                  # Ctrl-C
        # The runner gives its children 15 s to finish their job, then kills them, and then
        # stops Redis the same way: bounded, though a loaded machine may use the whole bound.
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out
        assert "stopped" in out
        assert "starting it again" in out
        stopping = out.split("stopping", 1)[1]
        assert "Traceback" not in stopping and "Error" not in stopping, out     # Redis stops after the workers
        assert wait_until(lambda: not any(_alive(c) for c in children), 15)
        assert not _up(intake) and not _up(office)
        assert not (Path(env["KESU_INSTANCE"]) / "redis.sock").exists()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_run_without_redis_server_says_so(env, tmp_path):
    bare = tmp_path / "bin"
    bare.mkdir()
    result = subprocess.run([sys.executable, "-m", "cli", "run"], capture_output=True, text=True,
                            env={**os.environ, **env, "KESU_KEY_PASSPHRASE": TEST_PASSPHRASE, "PATH": str(bare)},
                            cwd=Path(__file__).resolve().parents[2], timeout=60)
    assert result.returncode != 0 and "redis-server is missing" in result.stderr


def _up(url):
    try:
        urllib.request.urlopen(url, timeout=1)
        return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped) counts as stopped.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False
