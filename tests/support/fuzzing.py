"""How hard the property tests try: `make fuzz` asks for many more cases than CI."""

from __future__ import annotations

import os


def fuzz_examples(default: int) -> int:
    """Hypothesis example count: ONAIR_FUZZ_EXAMPLES scales it (`make fuzz`)."""
    value = os.environ.get("ONAIR_FUZZ_EXAMPLES")
    return int(value) if value else default
