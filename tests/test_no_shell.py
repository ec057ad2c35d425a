"""srkd never hands a user-controlled string to a shell (issue 7): no os.system/os.popen, no shell=True."""

import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "srkd"
FORBIDDEN = re.compile(r"\bos\.system\(|\bos\.popen\(|shell\s*=\s*True|\bcommands\.getoutput\(")


def test_no_shell_invocations_in_srkd():
    offenders = [
        f"{path.relative_to(SRC)}:{n}"
        for path in SRC.rglob("*.py")
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if FORBIDDEN.search(line) and not line.lstrip().startswith(("#", '"', "``"))
        and "refused" not in line
    ]
    assert not offenders, f"shell invocations: {offenders}"


def test_the_scan_would_catch_one(tmp_path):
    assert FORBIDDEN.search("subprocess.run(cmd, shell=True)")
    assert FORBIDDEN.search("os.system(f'rm {x}')")
