"""One-off trial behind a sentence of benchmarks/README.md (kd-step): what the CPU teacher's chunked forward
(``srkd.distill.base.teacher_chunk``, commit 72bb2c3) is worth inside the kd-step benchmark.

``srkd bench kd-step`` with the chunks turned off (a budget no batch reaches) or on (srkd's default). Run the two
alternately, in separate processes, since this machine's speed drifts by tens of percent within minutes:

    for m in off on off on; do python benchmarks/trials/teacher_chunks_ab.py $m; done

Not a benchmark and not srkd code.
"""

from __future__ import annotations

import sys

from srkd.cli.main import main
from srkd.distill import base

if __name__ == "__main__":
    if sys.argv[1:] not in (["off"], ["on"]):
        sys.exit("usage: teacher_chunks_ab.py off|on")
    if sys.argv[1] == "off":
        base.TEACHER_CHUNK_BYTES = 10**15  # every batch in one forward, as before commit 72bb2c3
    sys.exit(main(["bench", "kd-step", "--repeats", "5"]))
