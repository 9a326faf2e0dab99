"""Headless Debian Chromium through Selenium: the one way kesu starts a browser.

The crawler's browser (`sandbox=True`, workers.capture.browser) runs with Chromium's sandbox:
renderers in their own user, PID and network namespaces under a seccomp-bpf filter. Chromium
refuses its sandbox as root, so when kesu runs as root chromedriver and Chromium are started
as the unprivileged system user `kesu-chromium` (KESU_CHROMIUM_USER; scripts/setup.sh creates
it) with a profile folder it owns and an environment that holds none of kesu's settings.
Where the machine cannot give a sandbox (no user namespaces, no such user), the browser runs
without one and kesu says so loudly: in the log at every start, at `kesu run`, and on the
health page (`sandbox_plan()`).

The tests' and the browser-signals harness's own pages use `sandbox=False` (`--no-sandbox`):
they load only our own files.
"""
import functools
import logging
import os
import pwd
import shutil
import subprocess
import tempfile

log = logging.getLogger("kesu.chromium")

FLAGS = ["--headless=new", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking", "--disable-component-update", "--no-first-run",
         "--disable-sync", "--disable-quic", "--mute-audio"]
SANDBOX_USER = "kesu-chromium"
SETUID_HELPER = "/usr/lib/chromium/chrome-sandbox"


def _sandbox_user() -> str:
    return os.environ.get("KESU_CHROMIUM_USER") or SANDBOX_USER


def _namespaces_work(user: pwd.struct_passwd | None) -> tuple[bool, str]:
    """Can an unprivileged process make the user, PID and network namespaces Chromium's sandbox needs?"""
    if not os.path.exists("/proc/sys/kernel/seccomp/actions_avail"):
        return False, "the kernel offers no seccomp-bpf filter"
    unshare = shutil.which("unshare")
    if unshare is None:
        return False, "cannot test user namespaces (util-linux unshare missing)"
    drop = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []} if user is not None else {}
    try:
        done = subprocess.run([unshare, "--user", "--pid", "--net", "--fork", "true"], env={}, timeout=10,
                              capture_output=True, **drop)
    except (OSError, subprocess.SubprocessError) as exc:
        return False, f"user namespaces unavailable ({type(exc).__name__})"
    if done.returncode != 0:
        return False, "unprivileged user namespaces are disabled on this machine " \
                      f"({done.stderr.decode('utf-8', 'replace').strip()[:120]})"
    return True, "namespace sandbox (user, PID and network namespaces) and seccomp-bpf"


@functools.lru_cache(maxsize=1)
def sandbox_plan() -> dict:
    """How the crawler's Chromium runs here: {"sandbox": bool, "user": name | None, "why": str}.
    `user` is the unprivileged account Chromium runs as when kesu is root (None: kesu's own)."""
    helper = os.path.exists(SETUID_HELPER) and os.stat(SETUID_HELPER).st_mode & 0o4000 \
        and os.stat(SETUID_HELPER).st_uid == 0
    if os.geteuid() != 0:
        ok, why = _namespaces_work(None)
        if not ok and helper:
            ok, why = True, "setuid sandbox helper"
        return {"sandbox": ok, "user": None, "why": why}
    name = _sandbox_user()
    try:
        user = pwd.getpwnam(name)
    except KeyError:
        return {"sandbox": False, "user": None,
                "why": f"kesu runs as root and the system user {name} does not exist (scripts/setup.sh creates it): "
                       "Chromium runs as root without its sandbox"}
    if user.pw_uid == 0:
        return {"sandbox": False, "user": None, "why": f"the user {name} is root: Chromium runs without its sandbox"}
    ok, why = _namespaces_work(user)
    if not ok and helper:
        ok, why = True, "setuid sandbox helper"
    return {"sandbox": ok, "user": name, "why": why if ok else f"{why}: Chromium runs as {name} without its sandbox"}


@functools.lru_cache(maxsize=1)
def _browser_class():
    from selenium import webdriver

    class Browser(webdriver.Chrome):
        """A Chrome driver that also releases what kesu set up for it (its address guard, the
        profile folder of the unprivileged user) when it quits."""
        kesu_guard = None
        kesu_profile: str | None = None

        def quit(self):
            """Quit, then kill whatever survived (a hung browser, a chromedriver whose parent
            went first), so no process of the browser's user is left behind."""
            process = getattr(self.service, "process", None)
            left = ([process.pid] + descendants(process.pid)) if process is not None else []
            try:
                super().quit()
            finally:
                _kill(left)
                self.release()

        def release(self):
            guard, self.kesu_guard = self.kesu_guard, None
            if guard is not None:
                guard.stop()
            profile, self.kesu_profile = self.kesu_profile, None
            if profile:
                shutil.rmtree(profile, ignore_errors=True)

    return Browser


def new_driver(width: int = 1280, height: int = 900, extra_args=(), capabilities: dict | None = None,
               script_timeout: float = 300, sandbox: bool = False):
    """A headless Chromium. `sandbox=True` (the crawler): its sandbox, as an unprivileged user when
    kesu is root, or a loud warning where the machine cannot give one."""
    os.environ.setdefault("SE_OFFLINE", "true")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    flags = [*FLAGS, f"--window-size={width},{height}", *extra_args]
    popen_kw: dict = {}
    env = None
    profile = None
    if sandbox:
        plan = sandbox_plan()
        if not plan["sandbox"]:
            log.warning("CHROMIUM RUNS WITHOUT ITS SANDBOX: %s", plan["why"])
            flags.append("--no-sandbox")
        if plan["user"]:
            user = pwd.getpwnam(plan["user"])
            profile = tempfile.mkdtemp(prefix="kesu-chromium-")
            os.chown(profile, user.pw_uid, user.pw_gid)
            flags.append(f"--user-data-dir={profile}")
            popen_kw = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
            # nothing of kesu's environment (database URL, SMTP password) reaches the browser's user
            env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": profile, "TMPDIR": profile,
                   "LANG": os.environ.get("LANG", "C.UTF-8"), "SE_OFFLINE": "true"}
    else:
        flags.append("--no-sandbox")
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in flags:
        opts.add_argument(flag)
    for name, value in (capabilities or {}).items():
        opts.set_capability(name, value)
    service = Service(executable_path=shutil.which("chromedriver") or "/usr/bin/chromedriver", env=env,
                      popen_kw=popen_kw)
    try:
        driver = _browser_class()(options=opts, service=service)
    except BaseException:
        if profile:
            shutil.rmtree(profile, ignore_errors=True)
        raise
    driver.kesu_profile = profile
    driver.set_script_timeout(script_timeout)
    return driver


def sandbox_state(driver) -> dict:
    """What the running browser's renderers actually have: {"renderers": n, "sandboxed": n}, a
    renderer counting as sandboxed when it sits in a user namespace of its own under seccomp-bpf."""
    process = getattr(getattr(driver, "service", None), "process", None)
    if process is None:
        return {"renderers": 0, "sandboxed": 0}
    own_ns = os.readlink("/proc/self/ns/user")
    renderers = sandboxed = 0
    for pid in descendants(process.pid):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if b"--type=renderer" not in fh.read():
                    continue
            with open(f"/proc/{pid}/status") as fh:
                seccomp = next((line.split()[1] for line in fh if line.startswith("Seccomp:")), "0")
            ns = os.readlink(f"/proc/{pid}/ns/user")
        except OSError:
            continue
        renderers += 1
        sandboxed += int(seccomp == "2" and ns != own_ns)
    return {"renderers": renderers, "sandboxed": sandboxed}


def descendants(pid: int) -> list[int]:
    """Processes below `pid` (Linux /proc): the browser chromedriver started, and its helpers."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                ppid = int(fh.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _kill(pids: list[int]) -> None:
    import signal
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def close_driver(driver) -> None:
    """Quit the browser and its chromedriver; whatever survives a quit (a hung browser, a
    chromedriver that died first) is killed, so a finished job leaves no process behind."""
    if driver is None:
        return
    process = getattr(getattr(driver, "service", None), "process", None)
    left = ([process.pid] + descendants(process.pid)) if process is not None else []
    try:
        driver.quit()
    except Exception:
        pass
    _kill(left)
    if process is not None:
        try:
            process.wait(timeout=5)
        except Exception:
            pass
    release = getattr(driver, "release", None)
    if release is not None:
        release()                       # the guard and the profile folder, once nothing uses them
