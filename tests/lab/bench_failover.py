"""Leader failover time of two coordinators on one PostgreSQL store: from
SIGKILL of the leader to the survivor reporting itself leader on /metrics
(its background loops run from then on). Median of 5 rounds.

    ORRERY_TEST_PG=$(bash tests/lab/postgres.sh) \\
    ORRERY_COORDINATOR_BIN=target/debug/orrery-coordinator \\
    .venv/bin/python tests/lab/bench_failover.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "e2e"))

from orrery_e2e import Coordinator, pg_admin_url  # noqa: E402
from test_several_coordinators import beside, leads  # noqa: E402


def one_round(base: Path) -> float:
    a = Coordinator(base / "a", hosts=0)
    a.init()
    a.start()
    b = beside(a, base / "b")
    try:
        deadline = time.monotonic() + 10
        while not leads(a):
            assert time.monotonic() < deadline, "the first coordinator never led"
            time.sleep(0.05)
        a.kill_hard()
        started = time.monotonic()
        while not leads(b):
            assert time.monotonic() - started < 30, "no takeover within 30 s"
            time.sleep(0.02)
        return time.monotonic() - started
    finally:
        a.stop()
        b.stop()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    if not pg_admin_url():
        sys.exit("set ORRERY_TEST_PG (tests/lab/postgres.sh prints it)")
    times = []
    with tempfile.TemporaryDirectory() as d:
        for i in range(args.rounds):
            t = one_round(Path(d) / f"r{i}")
            times.append(t)
            print(f"round {i + 1}: {t * 1000:.0f} ms")
    print(f"leader failover, median of {len(times)}: {statistics.median(times) * 1000:.0f} ms "
          f"(min {min(times) * 1000:.0f}, max {max(times) * 1000:.0f})")


if __name__ == "__main__":
    main()
