"""Money is Decimal end to end: no float in the apps' code."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLOAT = re.compile(r"\bfloat\(|FloatField")


def test_no_float_in_application_code():
    offenders = [
        f"{path.relative_to(ROOT)}:{n}"
        for app in ("costs", "quotas", "profiles", "config")
        for path in (ROOT / app).rglob("*.py")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if FLOAT.search(line)
    ]
    assert offenders == []
