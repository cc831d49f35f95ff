#!/usr/bin/env python3
"""Mutation testing of fence_xenapi.py with cosmic-ray, against the fast tests.

    .venv/bin/python tests/mutation/campaign.py            # full campaign, then the report
    .venv/bin/python tests/mutation/campaign.py --resume   # go on with an interrupted one
    .venv/bin/python tests/mutation/campaign.py --report   # only the report
    .venv/bin/python tests/mutation/campaign.py --reuse-kills  # after small agent changes

Only the layers named in LAYERS are mutated: option parsing, the XAPI session, VM resolution
and power control. The tests run the agent as a subprocess, so the mutant must be the file
they execute: everything happens in a scratch copy of the checkout (build-mutation/checkout,
ignored by git), where cosmic-ray rewrites fence_xenapi.py in place for each mutant.

Steps: (1) copy the checkout; (2) run the fast tests once with line tracing
(tests/mutation/trace/sitecustomize.py) to learn which test executes which line, and how long
each test takes; (3) `cosmic-ray init`, and mark as skipped every mutation outside the layers;
(4) run the mutants, four at a time in copies of the checkout (cosmic-ray's worker function;
its own `exec` runs one at a time); the test command, tests/mutation/select_tests.py, runs
per mutant only the tests that execute the mutated statement, fastest first, `-x`, within a
time bound derived from their recorded duration; (5) a report per layer and the surviving
mutants' diffs, written to build-mutation/report.md (copy what it says into
tests/mutation/RESULTS.md, with a judgement for each survivor)."""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Optional, Sequence
from xml.etree import ElementTree

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script

from tests.mutation import operators
from tests.mutation.sandbox import ROOT, copy_checkout

operators.register()  # the worker processes inherit it

WORKDIR = ROOT / "build-mutation"
RECHECK = WORKDIR / "recheck.json"  # --recheck's results, by job id
# The fast tests that drive the agent: every tests/test_agent_*.py (new ones included), the
# unit tests, and the degraded-pool tests (the session and power layers' reconnects);
# and the hostile pool host's tests, which alone guard the HTTP exchange's bounds (trickling,
# endless, oversized answers): a mutant only runs the tests that execute its statement.
FAST_TESTS = ("tests/test_units.py",
              *sorted(f"tests/{path.name}" for path in (ROOT / "tests").glob("test_agent_*.py")),
              "tests/test_degraded.py", "tests/test_hostile.py")
# The layers under mutation, by their top-level definitions in fence_xenapi.py, or a class's
# method (`Class.method`: it then belongs to that layer, not to its class's). A name that no
# longer exists stops the campaign: update this table when the agent is reorganised.
LAYERS = {
    "options": ("shown_value", "parse_stdin", "parse_argv", "Target", "Options",
                "parse_fingerprints", "parse_fingerprint"),
    "session": ("Deadline", "Timeouts", "_Session", "_Redirect", "XapiSession"),
    "resolution": ("Vm", "_xapi_string", "same_name", "_query_matches", "_pick",
                   "resolve_vms", "list_vms"),
    "power": ("Outcome", "HostFacts", "PowerController", "_least_role", "_own_session_record",
              "do_monitor", "do_status", "_power_each", "do_off", "do_on", "do_reboot",
              "run_action"),
    # What decides whom the password goes to: the certificate checks (CA and host name, pins)
    "tls": ("TlsPolicy", "XapiChannel.verified", "XapiChannel._open", "XapiChannel._connect",
            "XapiChannel._os_error"),
    # the session_url and a redirect's address,
    "url": ("wire_host", "Endpoint"),
    # the name lookup, bounded by the exchange's deadline,
    "dns": ("_resolve",),
    # the race over the pool's hosts to the master (redirects, trust on redirect, refusals),
    "login": ("THUMBPRINT_REQUEST", "THUMBPRINT_ANSWER", "MAX_LOGIN_HOSTS", "CREDENTIAL_REFUSALS",
              "_master_policy", "_Attempt", "LoginRace", "XapiSession.login"),
    # the bounds of one HTTP exchange (deadline, sizes, header and line caps),
    "http": ("MAX_ANSWER_BYTES", "MAX_HEADER_LINE", "MAX_HEADERS", "MAX_HEADER_BYTES",
             "MAX_INTERIM_RESPONSES", "RECV_SIZE", "_Answer", "_Exchange",
             "XapiChannel.request", "XapiChannel._closed_while_idle", "XapiChannel._head",
             "XapiChannel._answer", "XapiChannel.close"),
    # and the readers of what the pool answers (escaping, depth, record caps).
    "xml": ("_escape_member_names", "_WholeAnswer", "decode_xmlrpc_response",
            "RecordMapScanner"),
}


# Selective mutation (Offutt et al.): one replacement per arithmetic operator and the
# negating or off-by-one replacement per comparison kill as many tests as all of cosmic-ray's
# variants (`+` into each of 11 other operators, `==` into `<`, `is`...), at a third of the
# mutants. Every other operator of cosmic-ray runs in full: not, and/or, numbers, True/False,
# exceptions, loops, break/continue, decorators, unary operators.
REDUNDANT = re.compile(
    r"ReplaceBinaryOperator_(?!Add_Sub$|Sub_Add$|Mult_Add$|Div_Mul$|FloorDiv_Mul$|Mod_Add$"
    r"|BitOr_BitAnd$|BitAnd_BitOr$)"
    r"|ReplaceComparisonOperator_(?!Eq_NotEq$|NotEq_Eq$|Is_IsNot$|IsNot_Is$|In_NotIn$"
    r"|NotIn_In$|Lt_LtE$|LtE_Lt$|Gt_GtE$|GtE_Gt$)")


def _spans(node: ast.stmt) -> list[tuple[str, int, int]]:
    """(name, first line, last line) that `node` defines (decorators included)."""
    names: list[str] = []
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        names = [node.name]
    elif isinstance(node, (ast.Assign, ast.AnnAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        names = [t.id for t in targets if isinstance(t, ast.Name)]
    first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
    return [(name, first, node.end_lineno or node.lineno) for name in names]


def layer_lines(source: str, strict: bool = True,
                only: Optional[Sequence[str]] = None) -> dict[int, str]:
    """line -> layer, for every line of the layers' definitions (`strict`: all must exist;
    `only`: just these layers). A method named `Class.method` wins over its class's layer."""
    where: dict[str, tuple[int, int]] = {}
    for node in ast.parse(source).body:
        for name, first, last in _spans(node):
            where[name] = (first, last)
        if isinstance(node, ast.ClassDef):
            for member in node.body:
                for name, first, last in _spans(member):
                    where[f"{node.name}.{name}"] = (first, last)
    lines: dict[int, str] = {}
    methods: dict[int, str] = {}
    for layer, defined in LAYERS.items():
        for name in defined:
            if name not in where and not strict:
                continue
            if name not in where:
                raise SystemExit(f"campaign: {name} (layer {layer}) is not in fence_xenapi.py; "
                                 "update LAYERS in tests/mutation/campaign.py")
            first, last = where[name]
            (methods if "." in name else lines).update(dict.fromkeys(range(first, last + 1),
                                                                     layer))
    lines.update(methods)
    return {line: layer for line, layer in lines.items() if only is None or layer in only}


def run(command: list[str], cwd: Path, **kwargs: object) -> None:
    print("campaign: $", " ".join(command), flush=True)
    subprocess.run(command, cwd=cwd, check=True, **kwargs)  # type: ignore[call-overload]


def trace_tests(checkout: Path, python: str) -> dict[str, object]:
    """Run the fast tests once, traced: which test executes which agent line, and how long
    each test takes (from pytest's JUnit XML)."""
    trace_dir = WORKDIR / "trace"
    shutil.rmtree(trace_dir, ignore_errors=True)
    trace_dir.mkdir(parents=True)
    junit = WORKDIR / "trace.xml"
    env = {**os.environ, "PYTHONPATH": str(checkout / "tests" / "mutation" / "trace"),
           "FX_TRACE_DIR": str(trace_dir), "FX_TRACE_AGENT": str(checkout / "fence_xenapi.py")}
    print("campaign: tracing the fast tests", flush=True)
    subprocess.run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                    f"--junitxml={junit}", *FAST_TESTS], cwd=checkout, env=env, check=False)
    lines: dict[str, set[str]] = {}
    for part in trace_dir.iterdir():
        for test, covered in json.loads(part.read_text(encoding="utf-8")).items():
            for line in covered:
                lines.setdefault(str(line), set()).add(test)
    durations: dict[str, float] = {}
    failed: set[str] = set()
    for case in ElementTree.parse(junit).iter("testcase"):  # noqa: S314 - pytest wrote it
        module = str(case.get("classname", "")).replace(".", "/") + ".py"
        test = f"{module}::{case.get('name')}"
        durations[test] = float(case.get("time", "0"))
        if case.find("failure") is not None or case.find("error") is not None:
            failed.add(test)
    if failed:
        # A test that fails on the original would "kill" every mutant it runs: left out, and
        # named in the report.
        print(f"campaign: left out, failing on the original agent: {sorted(failed)}",
              flush=True)
    return {"lines": {line: sorted(tests - failed) for line, tests in lines.items()},
            "durations": durations, "failing": sorted(failed)}


def mutant_keys(source: str, items: list[Any]) -> dict[str, str]:
    """job id -> a key that survives edits elsewhere in the agent: the enclosing top-level
    definition's source, the operator, and the mutant's rank among that operator's mutants
    in that definition."""
    spans = [(node.lineno, node.end_lineno or node.lineno, ast.get_source_segment(source, node))
             for node in ast.parse(source).body]
    ranked: Counter[tuple[str, str]] = Counter()
    keys = {}
    for item in sorted(items, key=lambda i: (i.mutations[0].start_pos, i.mutations[0].end_pos)):
        mutation = item.mutations[0]
        text = next((seg for first, last, seg in spans
                     if first <= mutation.start_pos[0] <= last), "")
        definition = hashlib.sha256((text or "").encode()).hexdigest()
        ranked[(definition, mutation.operator_name)] += 1
        keys[item.job_id] = (f"{definition}:{mutation.operator_name}:"
                             f"{ranked[(definition, mutation.operator_name)]}")
    return keys


def previous_kills() -> dict[str, Any]:
    """Results of the last campaign's killed mutants, by mutant_keys()."""
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome

    if not (WORKDIR / "session.sqlite").exists() or not (WORKDIR / "pristine.py").exists():
        return {}
    with use_db(str(WORKDIR / "session.sqlite"), WorkDB.Mode.open) as db:
        done = [(item, result) for item, result in db.completed_work_items
                if result.test_outcome == TestOutcome.KILLED]
    keys = mutant_keys((WORKDIR / "pristine.py").read_text(encoding="utf-8"),
                       [item for item, _ in done])
    return {keys[item.job_id]: result for item, result in done}


def reuse_kills(source: str, kills: dict[str, Any]) -> None:
    from cosmic_ray.work_db import WorkDB, use_db

    with use_db(str(WORKDIR / "session.sqlite"), WorkDB.Mode.open) as db:
        pending = list(db.pending_work_items)
        reused = 0
        for job_id, key in mutant_keys(source, pending).items():
            if key in kills:
                db.set_result(job_id, kills[key])
                reused += 1
    print(f"campaign: {reused} mutants of unchanged definitions were killed last time: "
          "not run again", flush=True)


def prepare(python: str, reuse: bool, only: Optional[Sequence[str]] = None) -> None:
    kills = previous_kills() if reuse else {}
    shutil.rmtree(WORKDIR, ignore_errors=True)
    checkout = copy_checkout(WORKDIR / "checkout")
    source = (checkout / "fence_xenapi.py").read_text(encoding="utf-8")
    (WORKDIR / "pristine.py").write_text(source, encoding="utf-8")
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True, check=False).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "fence_xenapi.py"], cwd=ROOT,
                           capture_output=True, text=True, check=False).stdout.strip()
    started = time.monotonic()
    campaign_map = trace_tests(checkout, python)
    campaign_map["agent_commit"] = commit + (" (with uncommitted changes)" if dirty else "")
    campaign_map["trace_seconds"] = round(time.monotonic() - started)
    (WORKDIR / "map.json").write_text(json.dumps(campaign_map), encoding="utf-8")
    config = WORKDIR / "cosmic-ray.toml"
    test_command = (f"{python} tests/mutation/select_tests.py --map {WORKDIR / 'map.json'} "
                    f"--pristine {WORKDIR / 'pristine.py'}")
    config.write_text(
        "[cosmic-ray]\n"
        'module-path = "fence_xenapi.py"\n'
        "timeout = 3600.0  # select_tests.py bounds each mutant by its tests' own duration\n"
        "excluded-modules = []\n"
        f"test-command = {json.dumps(test_command)}\n\n"
        "[cosmic-ray.distributor]\n"
        'name = "local"\n', encoding="utf-8")
    bin_dir = Path(python).parent
    run([str(bin_dir / "cosmic-ray"), "init", str(config), str(WORKDIR / "session.sqlite")],
        checkout)
    add_own_operators(checkout)
    skip_outside_layers(source, only)
    if kills:
        reuse_kills(source, kills)


def add_own_operators(checkout: Path) -> None:
    """Add the mutants of tests/mutation/operators.py (flipped boolean identity tests, any/all,
    min/max) to the session cosmic-ray initialised."""
    from cosmic_ray.work_db import WorkDB, use_db

    with use_db(str(WORKDIR / "session.sqlite"), WorkDB.Mode.open) as db:
        items = list(operators.work_items(checkout / "fence_xenapi.py", "fence_xenapi.py"))
        db.add_work_items(items)
    print(f"campaign: {len(items)} mutants of the campaign's own operators", flush=True)


def skip_outside_layers(source: str, only: Optional[Sequence[str]] = None) -> None:
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import WorkerOutcome, WorkResult

    lines = layer_lines(source, only=only)
    with use_db(str(WORKDIR / "session.sqlite"), WorkDB.Mode.open) as db:
        outside, redundant = [], []
        pending = list(db.pending_work_items)
        for item in pending:
            mutation = item.mutations[0]
            if not lines.get(mutation.start_pos[0]):
                outside.append(item.job_id)
            elif REDUNDANT.match(mutation.operator_name.rsplit("/", 1)[-1]):
                redundant.append(item.job_id)
        db.set_multiple_results(outside, WorkResult(
            output="outside the layers under test" if only is None else
            f"outside the layers under test this time ({', '.join(only)})",
            worker_outcome=WorkerOutcome.SKIPPED))
        db.set_multiple_results(redundant, WorkResult(
            output="redundant operator variant", worker_outcome=WorkerOutcome.SKIPPED))
        kept = len(pending) - len(outside) - len(redundant)
        print(f"campaign: {kept} mutants to run ({len(outside)} outside the layers and "
              f"{len(redundant)} redundant variants skipped)", flush=True)


def _untested(output: Optional[str]) -> bool:
    """select_tests.py found no test that executes the mutated statement."""
    return (output or "").startswith("select_tests: 0 test(s)")


def _rechecked() -> dict[str, Any]:
    return json.loads(RECHECK.read_text(encoding="utf-8")) if RECHECK.exists() else {}


def report() -> str:
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome, WorkerOutcome

    source = (WORKDIR / "pristine.py").read_text(encoding="utf-8")
    lines = layer_lines(source, strict=False)
    campaign_map = json.loads((WORKDIR / "map.json").read_text(encoding="utf-8"))
    counts: Counter[tuple[str, str]] = Counter()
    survivors: list[tuple[str, str, str]] = []
    checked = _rechecked()
    with use_db(str(WORKDIR / "session.sqlite"), WorkDB.Mode.open) as db:
        pending = sum(1 for _ in db.pending_work_items)
        for item, result in db.completed_work_items:
            if result.worker_outcome == WorkerOutcome.SKIPPED:
                continue
            mutation = item.mutations[0]
            layer = lines.get(mutation.start_pos[0], "?")
            if result.worker_outcome != WorkerOutcome.NORMAL:
                outcome = f"error ({result.worker_outcome})"
            elif result.test_outcome == TestOutcome.KILLED:
                outcome = "killed"
            elif result.test_outcome == TestOutcome.SURVIVED:
                outcome = "survived"
                # A statement no traced test executed: not tested at all, not a survivor of
                # tests (the tracing missed it, or no test reaches it): said so.
                note = " (no test executes it)" if _untested(result.output) else ""
                again = checked.get(item.job_id, {}).get("outcome", "")
                if again.endswith("KILLED"):
                    outcome = "killed by a left-out parametrization"
                    note = " (killed by a parametrization the selection left out)"
                elif again:
                    note = " (left-out parametrizations: none)" if again == "none" else \
                        " (left-out parametrizations ran: survived)"
                survivors.append((layer, f"{mutation.operator_name} @ line "
                                  f"{mutation.start_pos[0]} ({item.job_id[:8]}){note}",
                                  result.diff or ""))
            else:
                outcome = "incompetent"
            counts[(layer, outcome)] += 1
    out = [f"# Mutation campaign: fence_xenapi.py at {campaign_map.get('agent_commit')}", ""]
    if campaign_map.get("failing"):
        out += ["Left out, failing on the original agent: "
                + ", ".join(campaign_map["failing"]), ""]
    out += ["| layer | mutants | killed | survived | killed by a left-out parametrization "
            "(--recheck) | incompetent/errors | killed % (with those) |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for layer in [*LAYERS, "?"]:
        total = sum(n for (lay, _), n in counts.items() if lay == layer)
        if not total:
            continue
        killed, survived = counts[(layer, "killed")], counts[(layer, "survived")]
        late = counts[(layer, "killed by a left-out parametrization")]
        other = total - killed - survived - late
        share = 100.0 * (killed + late) / (killed + survived + late) if killed + survived \
            + late else 0.0
        out.append(f"| {layer} | {total} | {killed} | {survived} | {late} | {other} | "
                   f"{share:.1f} |")
    if pending:
        out += ["", f"{pending} mutants not run yet (`campaign.py --resume`)."]
    out += ["", "## Survivors", ""]
    for layer, title, diff in sorted(survivors):
        changed = [line for line in diff.splitlines()
                   if line[:1] in "+-" and not line.startswith(("+++", "---"))]
        out += [f"- {layer}: {title}", "  ```diff", *(f"  {line}" for line in changed),
                "  ```"]
    text = "\n".join(out) + "\n"
    (WORKDIR / "report.md").write_text(text, encoding="utf-8")
    return text


def _worker_start(slots: Any) -> None:
    """Each worker process runs its mutants in its own copy of the checkout."""
    os.chdir(slots.get())


def _run_one(job: tuple[str, Any, str]) -> tuple[str, Any, float]:
    from cosmic_ray.mutating import mutate_and_test

    job_id, mutations, test_command = job
    started = time.monotonic()
    result = mutate_and_test(mutations, test_command, 3600)
    return job_id, result, time.monotonic() - started


def _test_command() -> str:
    config = (WORKDIR / "cosmic-ray.toml").read_text(encoding="utf-8")
    match = re.search(r"^test-command = (.*)$", config, re.MULTILINE)
    assert match, config
    return str(json.loads(match.group(1)))


def _run_pool(pending: list[tuple[str, Any, str]], jobs: int, prefix: str,
              record: Any) -> None:
    """Run `pending` (job id, mutations, test command), `jobs` at once, each worker in its own
    copy of the checkout (`prefix`-N); `record(job_id, result)` takes each result in."""
    import multiprocessing

    slots: Any = multiprocessing.Queue()
    for number in range(jobs):
        copy = WORKDIR / f"{prefix}-{number}"
        if not copy.exists():
            shutil.copytree(WORKDIR / "checkout", copy, symlinks=True)
        # An interrupted run may have left a mutant in place; the mutation scripts are
        # today's (a recheck may come with a newer select_tests.py than the checkout's).
        shutil.copyfile(WORKDIR / "pristine.py", copy / "fence_xenapi.py")
        shutil.copytree(ROOT / "tests" / "mutation", copy / "tests" / "mutation",
                        dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
        slots.put(copy)
    done = 0
    started = time.monotonic()
    with multiprocessing.Pool(jobs, _worker_start, (slots,)) as pool:
        for job_id, result, seconds in pool.imap_unordered(_run_one, pending):
            record(job_id, result)
            done += 1
            print(f"campaign: {done}/{len(pending)} {result.test_outcome or result.worker_outcome}"
                  f" in {seconds:.0f} s ({time.monotonic() - started:.0f} s in all)", flush=True)


def execute(python: str, jobs: int, first: Optional[Sequence[str]] = None) -> None:
    """cosmic-ray's own `exec` runs mutants one at a time in one tree; this runs `jobs` at
    once, each worker in its own copy of the checkout, and records results in the session
    like `cosmic-ray exec` does (so `--resume` and cr-report work as with cosmic-ray's)."""
    from cosmic_ray.work_db import WorkDB, use_db

    test_command = _test_command()
    # Layer by layer, in LAYERS' order (or --layers'), so that an interrupted run has
    # finished whole layers.
    lines = layer_lines((WORKDIR / "pristine.py").read_text(encoding="utf-8"), strict=False)
    order = [*(first or ()), *LAYERS]
    with use_db(str(WORKDIR / "session.sqlite"), WorkDB.Mode.open) as db:
        pending = [(item.job_id, item.mutations, test_command)
                   for item in sorted(db.pending_work_items, key=lambda item: order.index(
                       lines.get(item.mutations[0].start_pos[0], "power")))]
    print(f"campaign: {len(pending)} mutants, {jobs} at a time", flush=True)
    with use_db(str(WORKDIR / "session.sqlite"), WorkDB.Mode.open) as db:
        _run_pool(pending, jobs, "worker", db.set_result)


def recheck(jobs: int, only: Optional[Sequence[str]] = None) -> None:
    """Run each survivor again against the parametrizations that select_tests.py left out
    (VARIANTS per test function): a survivor one of them kills was tested too little, not
    missed by the suite. Results go to build-mutation/recheck.json; the report shows them."""
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome

    checked = _rechecked()
    command = _test_command() + " --left-out"
    lines = layer_lines((WORKDIR / "pristine.py").read_text(encoding="utf-8"), strict=False,
                        only=only)
    with use_db(str(WORKDIR / "session.sqlite"), WorkDB.Mode.open) as db:
        pending = [(item.job_id, item.mutations, command)
                   for item, result in db.completed_work_items
                   if result.test_outcome == TestOutcome.SURVIVED
                   and item.mutations[0].start_pos[0] in lines
                   and not _untested(result.output)
                   and item.job_id not in checked]
    print(f"campaign: {len(pending)} survivors to recheck, {jobs} at a time", flush=True)

    def record(job_id: str, result: Any) -> None:
        checked[job_id] = {"outcome": "none" if _untested(result.output)
                           else str(result.test_outcome or result.worker_outcome),
                           "output": (result.output or "")[-2000:]}
        RECHECK.write_text(json.dumps(checked, indent=1), encoding="utf-8")

    _run_pool(pending, jobs, "recheck", record)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resume", action="store_true", help="go on with the last campaign")
    parser.add_argument("--report", action="store_true", help="only write the report")
    parser.add_argument("--jobs", type=int, default=4, help="mutants run at once (default 4)")
    parser.add_argument("--reuse-kills", action="store_true",
                        help="a new campaign does not run again the mutants the last one "
                        "killed in definitions that have not changed since")
    parser.add_argument("--layers", nargs="+", choices=list(LAYERS), metavar="LAYER",
                        help="mutate only these layers (default: all of LAYERS)")
    parser.add_argument("--recheck", action="store_true",
                        help="run the survivors again against the parametrizations the "
                        "selection left out, then the report")
    args = parser.parse_args(argv)
    python = str(ROOT / ".venv" / "bin" / "python")
    started = time.monotonic()
    if args.recheck:
        recheck(args.jobs, args.layers)
    elif not args.report:
        if not (args.resume and (WORKDIR / "session.sqlite").exists()):
            prepare(python, args.reuse_kills, args.layers)
        execute(python, args.jobs, args.layers)
    print(report())
    print(f"campaign: {time.monotonic() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
