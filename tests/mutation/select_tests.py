#!/usr/bin/env python3
"""cosmic-ray's test command: run only the tests that execute the mutated code.

cosmic-ray has just rewritten fence_xenapi.py in place (the file the tests' subprocesses
execute). This script compares it with the pristine copy, finds the statement the mutation
touched, and runs, fastest first and stopping at the first failure, the tests that executed
that statement in the campaign's tracing run (tests/mutation/campaign.py), at most VARIANTS
parametrizations of each test function. Leaving out tests that never execute the statement is
sound: until it runs, a mutant behaves exactly like the original, so such a test cannot tell
them apart. Keeping only a few parametrizations is the practical bound: a survivor is judged
by reading it, and its judgement says if another variant would have killed it.

The run is bounded by the selected tests' own recorded duration (times TIME_FACTOR, plus
TIME_FLOOR): a mutant that makes them hang is killed (the suite's own bounds would fail it
too, only later). Exit status: 0 the mutant survived, 1 it was killed."""

from __future__ import annotations

import argparse
import ast
import difflib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

TIME_FACTOR = 3.0
TIME_FLOOR = 30.0
VARIANTS = 2


def changed_lines(pristine: str, mutated: str) -> set[int]:
    """Line numbers of `pristine` (1-based) that the mutation replaced."""
    lines: set[int] = set()
    matcher = difflib.SequenceMatcher(None, pristine.splitlines(), mutated.splitlines(),
                                      autojunk=False)
    for tag, first, last, _, _ in matcher.get_opcodes():
        if tag != "equal":
            lines.update(range(first + 1, max(last, first + 1) + 1))
    return lines


def statement_lines(tree: ast.AST, line: int) -> range:
    """The lines of the innermost statement holding `line`; for a compound statement (if,
    for, def...), only its header (decorators included), up to its first body statement."""
    spans = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.stmt) or node.end_lineno is None:
            continue
        first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
        last = node.end_lineno
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.stmt):
            last = body[0].lineno - 1
        if first <= line <= last:
            spans.append((last - first, first, last))
    if not spans:
        return range(line, line + 1)
    _, first, last = min(spans)
    return range(first, last + 1)


def select(campaign_map: dict[str, object], pristine: str, mutated: str,
           left_out: bool = False) -> list[str]:
    tree = ast.parse(pristine)
    by_line: dict[str, list[str]] = campaign_map["lines"]  # type: ignore[assignment]
    durations: dict[str, float] = campaign_map["durations"]  # type: ignore[assignment]
    tests: set[str] = set()
    for line in changed_lines(pristine, mutated):
        for covered in statement_lines(tree, line):
            tests.update(by_line.get(str(covered), ()))
    fastest = sorted(tests, key=lambda test: (durations.get(test, 60.0), test))
    # Parametrized variants of one test mostly run the same path: the fastest VARIANTS of each
    # test function are kept (the campaign's practical bound; see tests/mutation/RESULTS.md),
    # first the fastest variant of every function, then the next ones.
    rank: dict[str, int] = {}
    chosen = []
    for test in fastest:
        function = test.split("[", 1)[0]
        rank[function] = rank.get(function, 0) + 1
        if (rank[function] > VARIANTS) == left_out:
            chosen.append((rank[function], durations.get(test, 60.0), test))
    return [test for _, _, test in sorted(chosen)]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--map", required=True, type=Path)
    parser.add_argument("--pristine", required=True, type=Path)
    parser.add_argument("--agent", default=Path("fence_xenapi.py"), type=Path)
    parser.add_argument("--left-out", action="store_true",
                        help="run the parametrizations the selection leaves out instead "
                        "(campaign.py --recheck, for a survivor)")
    args = parser.parse_args(argv)
    campaign_map = json.loads(args.map.read_text(encoding="utf-8"))
    tests = select(campaign_map, args.pristine.read_text(encoding="utf-8"),
                   args.agent.read_text(encoding="utf-8"), args.left_out)
    print(f"select_tests: {len(tests)} test(s) execute the mutated statement"
          + (" (parametrizations left out the first time)" if args.left_out else ""),
          flush=True)
    if not tests:
        return 0
    durations = campaign_map["durations"]
    bound = TIME_FLOOR + TIME_FACTOR * sum(durations.get(test, 60.0) for test in tests)
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
               "--tb=line", "-W", "ignore", *tests]
    tests_run = subprocess.Popen(command, start_new_session=True)
    try:
        returncode = tests_run.wait(timeout=bound)
    except subprocess.TimeoutExpired:
        os.killpg(tests_run.pid, signal.SIGKILL)  # pytest and the agents it started
        tests_run.wait()
        print(f"select_tests: the tests took over {bound:.0f} s: killed (a hang)")
        return 1
    return 0 if returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
