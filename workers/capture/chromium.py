"""Headless Debian Chromium through Selenium: the one way kesu starts a browser.

The crawler, the tests and the browser-signals harness share these flags (as root, in a
closed network: no sandbox, no background traffic, no downloads by Selenium Manager).
"""
import os
import shutil

FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking", "--disable-component-update", "--no-first-run",
         "--disable-sync", "--disable-quic", "--mute-audio"]


def new_driver(width: int = 1280, height: int = 900, extra_args=(), capabilities: dict | None = None,
               script_timeout: float = 300):
    os.environ.setdefault("SE_OFFLINE", "true")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in [*FLAGS, f"--window-size={width},{height}", *extra_args]:
        opts.add_argument(flag)
    for name, value in (capabilities or {}).items():
        opts.set_capability(name, value)
    service = Service(executable_path=shutil.which("chromedriver") or "/usr/bin/chromedriver")
    driver = webdriver.Chrome(options=opts, service=service)
    driver.set_script_timeout(script_timeout)
    return driver


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


def close_driver(driver) -> None:
    """Quit the browser and its chromedriver; whatever survives a quit (a hung browser, a
    chromedriver that died first) is killed, so a finished job leaves no process behind."""
    if driver is None:
        return
    import signal
    process = getattr(getattr(driver, "service", None), "process", None)
    left = ([process.pid] + descendants(process.pid)) if process is not None else []
    try:
        driver.quit()
    except Exception:
        pass
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    if process is not None:
        try:
            process.wait(timeout=5)
        except Exception:
            pass
