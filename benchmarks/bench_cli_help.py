"""`alignlab --help` start-up: the lazy parser (no area imported) against building every area's parser.

Run:  .venv/bin/python benchmarks/bench_cli_help.py [--repeats 5]

Each variant runs in a fresh interpreter (what a user waits for), ``--repeats`` times; the table gives
the median wall seconds and the ratio to the full build. ``full`` is what `alignlab --help` cost before
the lazy parser: every area module imported (and with them torch).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

VARIANTS = {
    "lazy (alignlab --help)": (
        "from alignlab.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass"
    ),
    "full (every area imported)": "from alignlab.cli import build_parser\nbuild_parser().format_help()",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    times: dict[str, list[float]] = {k: [] for k in VARIANTS}
    for _ in range(args.repeats):
        for name, code in VARIANTS.items():  # interleaved, so load changes hit both alike
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
            times[name].append(time.perf_counter() - t0)
    from alignlab.core.tables import markdown_table

    full = statistics.median(times["full (every area imported)"])
    print(
        markdown_table(
            ["variant", "median wall s", "ratio to full"],
            [
                [name, f"{statistics.median(ts):.2f}", f"{statistics.median(ts) / full:.2f}"]
                for name, ts in times.items()
            ],
            align="lrr",
        )
    )


if __name__ == "__main__":
    main()
