#!/usr/bin/env python3
"""Counts test cases in a meson build dir: Boost.Test executables by their XML reports (one
count per test case), every other meson test as one case. Prints "N passed, N failed, N
skipped". With --sum, adds up such lines and exits non-zero if any failed."""
import json
import pathlib
import re
import sys
import xml.etree.ElementTree as ET


def suite_of(path: pathlib.Path):
    root = ET.parse(path).getroot()
    return root if root.tag == "TestSuite" else root.find("TestSuite")


def merged_ranks(report: pathlib.Path, ranks):
    """A test run on several MPI ranks (tests/cluster/): the rank 0 report plus NAME.xml.rankN
    from the others. Each test case counts once: failed if it failed (or aborted) on any rank,
    skipped if skipped on every rank, else passed."""
    status = {}
    for path in [report] + ranks:
        for case in suite_of(path).iter("TestCase"):
            name, result = case.get("name"), case.get("result", "failed")
            result = {"aborted": "failed", "timed_out": "failed"}.get(result, result)
            if result not in ("passed", "skipped"):
                result = "failed"
            before = status.get(name)
            if before is None or before == "skipped" or result == "failed":
                status[name] = result if before != "failed" else "failed"
    values = list(status.values())
    return values.count("passed"), values.count("failed"), values.count("skipped")


def count_dir(build: pathlib.Path):
    passed = failed = skipped = 0
    log = build / "meson-logs" / "testlog.json"
    if not log.exists():
        return 0, 1, 0
    for line in log.read_text().splitlines():
        if not line.strip():
            continue
        t = json.loads(line)
        name, result = t["name"].split(" / ")[-1], t["result"]
        report = build / "test-reports" / f"{name}.xml"
        ranks = sorted(report.parent.glob(f"{name}.xml.rank*")) if report.exists() else []
        if ranks:
            try:
                p, f, s = merged_ranks(report, ranks)
                if result not in ("OK", "SKIP", "EXPECTEDFAIL") and f == 0:
                    f = 1  # a rank crashed after its report, or mpirun failed the run
                passed, failed, skipped = passed + p, failed + f, skipped + s
                continue
            except (ET.ParseError, AttributeError, ValueError):
                pass
        if report.exists():
            try:
                root = ET.parse(report).getroot()
                suite = root if root.tag == "TestSuite" else root.find("TestSuite")
                p = int(suite.get("test_cases_passed", 0)) + int(suite.get("test_cases_passed_with_warnings", 0))
                f = int(suite.get("test_cases_failed", 0)) + int(suite.get("test_cases_aborted", 0))
                s = int(suite.get("test_cases_skipped", 0))
                if result not in ("OK", "SKIP", "EXPECTEDFAIL") and f == 0:
                    f = 1  # crashed after the report, or a sanitizer failed the run
                passed, failed, skipped = passed + p, failed + f, skipped + s
                continue
            except (ET.ParseError, AttributeError, ValueError):
                pass
        if result == "OK":
            passed += 1
        elif result == "SKIP":
            skipped += 1
        else:
            failed += 1
    return passed, failed, skipped


def main():
    if sys.argv[1] == "--sum":
        totals = [0, 0, 0]
        for line in sys.argv[2:]:
            for i, word in enumerate(("passed", "failed", "skipped")):
                m = re.search(rf"(\d+) {word}", line)
                if m:
                    totals[i] += int(m.group(1))
        print(f"{totals[0]} passed, {totals[1]} failed, {totals[2]} skipped")
        sys.exit(1 if totals[1] else 0)
    p, f, s = count_dir(pathlib.Path(sys.argv[1]))
    print(f"{p} passed, {f} failed, {s} skipped")


if __name__ == "__main__":
    main()
