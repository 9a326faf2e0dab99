import hashlib
import os

import pytest
from conftest import wait_for

pytestmark = pytest.mark.browser


@pytest.mark.parametrize("size", [0, 1, 4 * 1024 * 1024, 9 * 1024 * 1024 + 7])
def test_streamed_hashes_equal_hashlib(chromium, static_server, size):
    data = os.urandom(size)
    name = f"blob-{size}.bin"
    (static_server.files / name).write_bytes(data)
    chromium.get(static_server + "/harness/filehash.html")
    wait_for(chromium, "window.harnessReady")
    got = chromium.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "window.hashUrl(arguments[0]).then(done, e => done({error: String(e)}));", f"/files/{name}")
    assert got == {"sha256": hashlib.sha256(data).hexdigest(), "md5": hashlib.md5(data).hexdigest()}
