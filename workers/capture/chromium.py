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
