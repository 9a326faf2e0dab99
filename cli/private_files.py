"""Files the command line writes for staff: hash exports, evidence ZIPs and PDFs."""
import os
import sys
import tempfile


def write_private(path: str, data: bytes) -> None:
    """Write readable by its owner only (exports hold hashes or decrypted captures), whole or
    not at all: a temporary file beside it (mode 0600) replaces it. "-" is standard output."""
    if path == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
