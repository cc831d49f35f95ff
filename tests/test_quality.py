"""Code quality gates, run as the tools' own command lines: ruff and mypy are clean on the
agent and the tests, vermin confirms the agent runs on Python 3.9, and on a 3.9 interpreter
the agent really does (without lxml, which only metadata needs)."""

from __future__ import annotations

import ast
import glob
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.support import AGENT, ROOT, require, require_path, run_agent
from tests.xapisim import SimHandle

VENV_BIN = ROOT / ".venv" / "bin"
CHECKED = [str(AGENT), str(ROOT / "tests")]


def run_tool(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    tool = VENV_BIN / name
    require_path(tool)
    return subprocess.run([str(tool), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, check=False)


def test_ruff_is_clean() -> None:
    done = run_tool("ruff", "check", "--no-cache", *CHECKED)
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_is_clean() -> None:
    # tests/ is no package: explicit package bases make tests/support.py the module
    # `tests.support` that the tests import, rather than a second module `support`.
    done = run_tool("mypy", "--explicit-package-bases", *CHECKED)
    assert done.returncode == 0, done.stdout + done.stderr


def test_vermin_agent_needs_at_most_python_3_9() -> None:
    done = run_tool("vermin", "--target=3.9-", "--no-tips", "--violations", str(AGENT))
    assert done.returncode == 0, done.stdout + done.stderr


def python39() -> Path:
    """A Python 3.9 interpreter: $FX_PYTHON39 or pyenv's (this project's machines, CI's
    included, come with pyenv's 3.9; its python3.9 shim on PATH may refuse to run). Debian 12
    packages none and CI may download no interpreter, so where there is none the test skips
    locally and fails under CI=true (tests/support.py)."""
    candidates = [os.environ.get("FX_PYTHON39", ""),
                  *sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.9*/bin/python")),
                          reverse=True)]
    found = [path for path in candidates if path and os.access(path, os.X_OK)]
    require(bool(found), "no Python 3.9 interpreter",
            "set FX_PYTHON39 to one, or `pyenv install 3.9`")
    return Path(found[0])


def test_status_runs_on_python_3_9(sim: SimHandle) -> None:
    interpreter = python39()
    run = run_agent([str(AGENT)], stdin=sim.params(action="status", plug="vm-running"),
                    agent=interpreter)
    assert run.returncode == 0, run
    assert run.stdout == "Status: ON\n"
    assert sim.sessions_open() == 0


@pytest.mark.parametrize("ci,outcome", [("true", "1 failed"), ("", "1 skipped")])
def test_a_skip_fails_under_ci(tmp_path: Path, ci: str, outcome: str) -> None:
    """tests/conftest.py turns any skip into a failure under CI=true, wherever it comes from."""
    (tmp_path / "test_skipper.py").write_text(
        "import pytest\n\n\ndef test_skips() -> None:\n    pytest.skip('no frobnicator')\n")
    done = subprocess.run(
        [str(VENV_BIN / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "-p", "tests.conftest", str(tmp_path / "test_skipper.py")],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "CI": ci, "PYTHONPATH": str(ROOT)})
    assert outcome in done.stdout, done.stdout + done.stderr


def test_planted_bug_catalogue_is_current() -> None:
    """tests/mutation/planted.py runs for minutes, so not in CI; its catalogue is checked
    here: each bug's text occurs exactly once in the agent, its planting still compiles,
    and every test it names exists (a renamed test would make the bug 'not found')."""
    from tests.mutation.planted import BUGS

    source = AGENT.read_text(encoding="utf-8")
    for bug in BUGS:
        assert source.count(bug.old) == 1, f"{bug.name}: its text is not in the agent once"
        compile(source.replace(bug.old, bug.new), bug.name, "exec")
        for test in bug.tests:
            path, _, name = test.partition("::")
            module = ast.parse((ROOT / path).read_text(encoding="utf-8"))
            defined = {node.name for node in ast.walk(module)
                       if isinstance(node, ast.FunctionDef)}
            assert re.sub(r"\[.*\]$", "", name) in defined, f"{bug.name}: {test} is gone"


def test_mutation_campaign_names_the_agents_definitions() -> None:
    """tests/mutation/campaign.py mutates the agent's trust and safety layers by the names
    of their definitions; a definition renamed or moved away would stop the next campaign
    (it runs before a release, not in CI): every name in LAYERS must still exist."""
    from tests.mutation.campaign import LAYERS, layer_lines

    lines = layer_lines(AGENT.read_text(encoding="utf-8"))
    assert set(lines.values()) == set(LAYERS)


# --- the module's layers ---------------------------------------------------------------------

_RULE = "# " + "-" * 93


def module_sections(source: str) -> list[tuple[int, str]]:
    """(first line, title) of each section of a module: a comment line framed by two rules.
    The lines before the first section are the preamble (imports, version, constants)."""
    lines = source.splitlines()
    found = [(1, "preamble")]
    for number in range(1, len(lines) - 1):
        if lines[number - 1] == _RULE and lines[number + 1] == _RULE and \
                lines[number].startswith("# "):
            found.append((number + 1, lines[number][2:]))
    return found


def _is_type_checking(node: ast.stmt) -> bool:
    return isinstance(node, ast.If) and isinstance(node.test, ast.Name) and \
        node.test.id == "TYPE_CHECKING"


def _defined(statement: ast.stmt) -> set[str]:
    """The module-level names a top-level statement defines (type-only ones excluded)."""
    if _is_type_checking(statement):
        assert isinstance(statement, ast.If)
        return set().union(*(_defined(node) for node in statement.orelse))
    if isinstance(statement, (ast.FunctionDef, ast.ClassDef)):
        return {statement.name}
    if isinstance(statement, (ast.Import, ast.ImportFrom)):
        return {(alias.asname or alias.name).split(".")[0] for alias in statement.names}
    names = set()
    for node in ast.walk(statement):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return names


def _stored(function: ast.AST) -> set[str]:
    """The local names of a function or lambda (arguments, assignments, imports, nested defs),
    not looking into nested functions' bodies."""
    names: set[str] = set()
    args = getattr(function, "args", None)
    if isinstance(args, ast.arguments):
        names.update(a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs])
        names.update(a.arg for a in (args.vararg, args.kwarg) if a is not None)
    todo = list(ast.iter_child_nodes(function))
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            continue
        elif isinstance(node, ast.Lambda):
            continue
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
        todo.extend(ast.iter_child_nodes(node))
    return names


def _used(node: ast.AST, local: frozenset[str] = frozenset()) -> set[str]:
    """The global names `node` reads when it runs: at import, or when its functions are
    called. Annotations (never evaluated: `from __future__ import annotations`) and
    `if TYPE_CHECKING:` blocks are type-only and do not count."""
    if isinstance(node, ast.stmt) and _is_type_checking(node):
        assert isinstance(node, ast.If)
        return set().union(*(_used(child, local) for child in node.orelse))
    if isinstance(node, ast.Name):
        return {node.id} if isinstance(node.ctx, ast.Load) and node.id not in local else set()
    found: set[str] = set()
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
        # Decorators and defaults run where the function is defined; the body when called.
        for outer in [*getattr(node, "decorator_list", []), *node.args.defaults,
                      *(d for d in node.args.kw_defaults if d is not None)]:
            found |= _used(outer, local)
        inner = local | _stored(node)
        body = node.body if isinstance(node.body, list) else [node.body]
        for statement in body:
            found |= _used(statement, inner)
        return found
    for field, value in ast.iter_fields(node):
        if field in ("annotation", "returns"):
            continue
        for child in value if isinstance(value, list) else [value]:
            if isinstance(child, ast.AST):
                found |= _used(child, local)
    return found


def layer_violations(source: str) -> list[str]:
    """Each use of a module-level name defined in a later section than the one using it."""
    sections = module_sections(source)
    starts = [line for line, _ in sections]

    def section_of(line: int) -> int:
        return sum(1 for start in starts if start <= line) - 1

    tree = ast.parse(source)
    home: dict[str, int] = {}
    for statement in tree.body:
        for name in _defined(statement):
            home.setdefault(name, section_of(statement.lineno))
    problems = []
    for statement in tree.body:
        here = section_of(statement.lineno)
        for name in sorted(_used(statement)):
            if home.get(name, -1) > here:
                where = getattr(statement, "name", f"line {statement.lineno}")
                problems.append(f"{where} (in '{sections[here][1]}') uses {name} "
                                f"(from '{sections[home[name]][1]}')")
    return problems


def test_each_section_of_the_agent_uses_only_those_above_it() -> None:
    """The module docstring lists the sections in order; each uses only names defined in
    itself or above it (at import or in its functions' bodies), so the module reads top to
    bottom and a layer can be understood without what follows."""
    source = AGENT.read_text(encoding="utf-8")
    titles = [title for _, title in module_sections(source)][1:]
    docstring = ast.get_docstring(ast.parse(source)) or ""
    listed = re.findall(r"^ +[0-9]+\. (.+)$", docstring, re.MULTILINE)
    assert listed == titles, "the module docstring must list the sections in order"
    assert len(titles) >= 6
    assert layer_violations(source) == []


def test_the_layer_check_sees_a_use_of_a_later_section() -> None:
    rule = _RULE + "\n"
    source = (f'{rule}# One\n{rule}\nX = 1\n\n\ndef early(a: Later) -> int:\n'
              f'    b = a\n    return b + X + later()\n\n\n{rule}# Two\n{rule}\n'
              'def later() -> int:\n    return X\n\n\nclass Later:\n    pass\n')
    assert layer_violations(source) == ["early (in 'One') uses later (from 'Two')"]
    assert layer_violations(source.replace(" + later()", "")) == []
