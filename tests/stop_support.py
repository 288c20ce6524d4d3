"""A tlzoo CLI launcher whose scan hangs in a real blocking read, for the tests of signals outside the loop.

Run as a script (`python tests/stop_support.py run SPEC ...`) it does what
reliability_support.py does (the tiny backbone, one thread) and, with
TLZOO_TEST_HANG_FIFO=PATH set, makes the scan's first file open the FIFO at
PATH, which blocks until a writer comes (here: never), after writing
TLZOO_TEST_MARKER. That is what a stuck network file system looks like from a
scan thread.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def _hang_in_the_scan(fifo: str, marker: str) -> None:
    import tlzoo.data.scan as scan

    original = scan.check_image

    def check_image(path):
        Path(marker).write_text("scanning")
        with open(fifo, "rb"):  # blocks: nobody ever opens the FIFO for writing
            pass
        return original(path)

    scan.check_image = check_image


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from reliability_support import register_tiny, use_one_thread

    register_tiny()
    use_one_thread()
    if os.environ.get("TLZOO_TEST_HANG_FIFO"):
        _hang_in_the_scan(os.environ["TLZOO_TEST_HANG_FIFO"], os.environ["TLZOO_TEST_MARKER"])
    from tlzoo.cli.main import main

    main(sys.argv[1:])
