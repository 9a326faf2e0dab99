"""`kesu run`: start every part on this machine, keep them up, stop them all on Ctrl-C.

A part that stops (a worker that lost Redis, a crash) is started again with a growing pause;
the intake is never taken down because something else stopped. Stopping stops the workers,
the scheduler and the servers first and Redis last, so nothing prints connection tracebacks.

The key passphrase is handed to the children that need it through a pipe, never
through the environment or a file; the intake server never gets it.
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import click

from cli.common import warn_missing_contact
from crypto.keys import WrongPassphrase
from store.config import load
from store.instance import FolderMismatch, Instance

RESTART_MAX_S = 60.0        # the longest pause before a stopped child is started again
RESTART_RESET_S = 60.0      # a child that ran this long starts over with a short pause


def _fail(message):
    click.secho(f"kesu: {message}", fg="red", err=True)
    sys.exit(1)


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _wait_for(check, timeout: float, what: str, procs):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        dead = [p for p in procs if p.poll() is not None]
        if dead:
            raise RuntimeError(f"{what}: a process stopped early (exit {dead[0].returncode})")
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not come up within {timeout:.0f} s")


def _listening(host, port):
    def check():
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            return False
    return check


def _start_redis(settings):
    exe = shutil.which("redis-server")
    if not exe:
        _fail("redis-server is missing: run `make setup` (or set KESU_REDIS_URL to a running Redis)")
    sock = settings.redis_socket
    sock.unlink(missing_ok=True)
    # No persistence: Redis holds only queues; the database holds everything that matters.
    return subprocess.Popen([exe, "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700",
                             "--save", "", "--appendonly", "no", "--dir", str(settings.instance),
                             "--logfile", str(settings.log_dir / "redis.log")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def run_all(read_passphrase):
    instance = Instance(load())
    settings = instance.settings
    fresh = not instance.initialised()
    passphrase = read_passphrase(confirm=fresh)
    try:
        if fresh:
            click.echo(f"kesu: creating the instance at {settings.instance}", err=True)
        instance.init(passphrase)        # idempotent: applies migrations, checks the passphrase
    except WrongPassphrase:
        _fail("wrong key passphrase")
    except FolderMismatch as exc:
        _fail(str(exc))
    warn_missing_contact(settings)
    for host, port, what in ((settings.intake_host, settings.intake_port, "intake"),
                             (settings.backoffice_host, settings.backoffice_port, "back office")):
        if not _port_free(host, port):
            _fail(f"port {port} on {host} is taken, so the {what} cannot start "
                  f"(stop what uses it, or set KESU_{'INTAKE' if what == 'intake' else 'BACKOFFICE'}_PORT)")

    procs: list[subprocess.Popen] = []
    env = dict(os.environ)
    env.pop("KESU_KEY_PASSPHRASE", None)
    kesu = [sys.executable, "-m", "cli"]

    children: list[dict] = []      # what to start again when it stops: args, key, process, back-off

    def launch(args, with_key):
        p = subprocess.Popen(kesu + args + (["--passphrase-stdin"] if with_key else []), env=env,
                             stdin=subprocess.PIPE if with_key else subprocess.DEVNULL, start_new_session=True)
        if with_key:
            p.stdin.write((passphrase + "\n").encode())
            p.stdin.close()
        procs.append(p)
        return p

    def spawn(args, with_key):
        p = launch(args, with_key)
        children.append({"args": args, "key": with_key, "proc": p, "started": time.monotonic(),
                         "pause": 1.0, "again_at": None})
        return p

    def keep_up():
        """A child that stopped is started again after a pause that doubles while it keeps
        stopping (up to RESTART_MAX_S), so one broken part never takes the intake down with it."""
        if stopping:
            return
        now = time.monotonic()
        for child in children:
            p = child["proc"]
            if p.poll() is None:
                if now - child["started"] > RESTART_RESET_S:
                    child["pause"] = 1.0
                continue
            if child["again_at"] is None:
                child["again_at"] = now + child["pause"]
                click.secho(f"kesu: `kesu {' '.join(child['args'])}` stopped (exit {p.returncode}); "
                            f"starting it again in {child['pause']:.0f} s", fg="yellow", err=True)
                child["pause"] = min(RESTART_MAX_S, child["pause"] * 2)
            elif now >= child["again_at"]:
                procs.remove(p)
                child.update(proc=launch(child["args"], child["key"]), started=now, again_at=None)

    def keep_redis_up():
        nonlocal redis_proc
        if not stopping and redis_proc is not None and redis_proc.poll() is not None:
            click.secho(f"kesu: redis-server stopped (exit {redis_proc.returncode}); starting it again "
                        "(the database keeps every job; the sweep sends their wake-ups again)", fg="yellow", err=True)
            procs.remove(redis_proc)
            redis_proc = _start_redis(settings)
            procs.insert(0, redis_proc)
            _wait_for(lambda: settings.redis_socket.exists(), 20, "redis-server", [redis_proc])

    stopping = False
    redis_proc = None

    def stop(*_):
        nonlocal stopping
        if stopping:
            return
        stopping = True
        click.echo("\nkesu: stopping…", err=True)
        # Redis goes last: workers and the scheduler finish their work with a queue still there,
        # instead of printing connection tracebacks.
        first = [p for p in procs if p is not redis_proc]
        for group in (first, [redis_proc] if redis_proc else []):
            for p in reversed(group):
                if p.poll() is None:
                    p.terminate()
            deadline = time.monotonic() + 15
            for p in group:
                try:
                    p.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    p.kill()
        if not settings.redis_url:
            settings.redis_socket.unlink(missing_ok=True)
        click.echo("kesu: stopped", err=True)

    signal.signal(signal.SIGTERM, lambda *_: (stop(), sys.exit(0)))
    # Ctrl-C stops it even when it was started with SIGINT ignored (from a background job,
    # nohup or a service manager), where Python installs no KeyboardInterrupt of its own.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        if not settings.redis_url:
            redis_proc = _start_redis(settings)
            procs.append(redis_proc)
            _wait_for(lambda: settings.redis_socket.exists(), 20, "redis-server", procs)
            env["KESU_REDIS_URL"] = f"unix://{settings.redis_socket}"
        spawn(["worker", "--queues", "match"], True)
        spawn(["worker", "--queues", "default"], True)
        spawn(["worker", "--queues", "crawl"], False)     # holds no private key: the matcher matches and signs
        spawn(["scheduler"], False)
        spawn(["serve", "intake"], False)
        spawn(["serve", "backoffice"], True)
        _wait_for(_listening(settings.intake_host, settings.intake_port), 60, "intake", procs)
        _wait_for(_listening(settings.backoffice_host, settings.backoffice_port), 60, "back office", procs)
        click.echo(f"kesu: intake      http://{settings.intake_host}:{settings.intake_port}/", err=True)
        click.echo(f"kesu: back office http://{settings.backoffice_host}:{settings.backoffice_port}/", err=True)
        click.echo("kesu: press Ctrl-C to stop", err=True)
        while True:
            keep_redis_up()
            keep_up()
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    except RuntimeError as exc:
        click.secho(f"kesu: {exc}", fg="red", err=True)
        stop()
        sys.exit(1)
    finally:
        stop()
