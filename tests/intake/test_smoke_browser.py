import pytest
from conftest import wait_for

pytestmark = pytest.mark.browser


def test_vendored_libsodium_loads_in_chromium(chromium, static_server):
    chromium.get(static_server + "/harness/smoke.html")
    assert wait_for(chromium, "window.harnessReady") == 48
