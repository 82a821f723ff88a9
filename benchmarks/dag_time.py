"""Where a workflow run spent its time: wall clock, job time and each rule's share, from Snakemake's log.

Run after `make run` (the newest log under .snakemake/log/, or the one given):
    python benchmarks/dag_time.py [.snakemake/log/<time>.snakemake.log]
A job's time is from its "rule ...: jobid N" block to "Finished job N." (second resolution, as the log).
"""
from __future__ import annotations

import collections
import datetime as dt
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_STAMP = re.compile(r"^\[(\w{3} \w{3}\s+\d+ [\d:]+ \d{4})\]")
_RULE = re.compile(r"^(?:local)?rule (\w+):")
_JOBID = re.compile(r"^\s+jobid: (\d+)")
_FINISHED = re.compile(r"^Finished job(?:id:)? (\d+)")


def rule_times(lines: list[str]) -> tuple[float, dict[str, list[float]]]:
    """(wall seconds, {rule: [seconds of each job]}) of one Snakemake log."""
    now = first = None
    rule = None
    started: dict[str, tuple[str, dt.datetime]] = {}
    jobs: dict[str, list[float]] = collections.defaultdict(list)
    for line in lines:
        if stamp := _STAMP.match(line):
            now = dt.datetime.strptime(" ".join(stamp.group(1).split()), "%a %b %d %H:%M:%S %Y")
            first = first or now
        elif match := _RULE.match(line):
            rule = match.group(1)
        elif (match := _JOBID.match(line)) and rule:
            started[match.group(1)] = (rule, now)
            rule = None
        elif (match := _FINISHED.match(line)) and match.group(1) in started:
            name, start = started.pop(match.group(1))
            jobs[name].append((now - start).total_seconds())
    wall = (now - first).total_seconds() if first else 0.0
    return wall, dict(jobs)


def main(argv: list[str]) -> int:
    logs = sorted((ROOT / ".snakemake" / "log").glob("*.snakemake.log"))
    path = Path(argv[0]) if argv else (logs[-1] if logs else None)
    if path is None or not path.is_file():
        print("error: no Snakemake log (run `make run` first, or pass a log file)", file=sys.stderr)
        return 1
    wall, jobs = rule_times(path.read_text().splitlines())
    total = sum(sum(times) for times in jobs.values())
    print(f"{path.name}: wall {wall / 60:.1f} min, {sum(map(len, jobs.values()))} jobs, job time {total / 60:.1f} min")
    for name, times in sorted(jobs.items(), key=lambda item: -sum(item[1])):
        print(f"  {name:28s} {len(times):4d} jobs {sum(times):7.0f} s {100 * sum(times) / max(total, 1):5.1f} %"
              f"  (mean {sum(times) / len(times):5.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
