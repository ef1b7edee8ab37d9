"""QoE benchmark: every controller on every trace under identical links, compared against GCC.

    .venv/bin/python bench/qoe.py --traces ../shared/traces/norway_hsdpa_3g \\
        ../shared/traces/fcc_broadband --controllers gcc,oracle --max-traces-per-family 3 \\
        --duration-s 30 --out /tmp/bench-smoke

The same as ``loki bench``. Writes to ``--out``: ``sessions.jsonl`` (one line per finished
session; a rerun skips those), ``results.json`` (per controller, family and overall aggregates,
and paired changes against GCC with bootstrap intervals), ``report.md`` and PNG plots.
Options: ``--help``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loki.bench import main

if __name__ == "__main__":
    sys.exit(main())
