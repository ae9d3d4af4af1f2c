"""`make mutation`: mutation testing of the modules that decide whether a patient is texted.

mutmut (configured in pyproject.toml, [tool.mutmut]) puts small deliberate mistakes into
each module and runs the fast tests that cover the mutated function; a mistake no test
notices survives. This script runs it for the modules asked (all by default; `--changed
REF` takes those a change since REF touches, and all of them when it touches their fast
tests), then prints each module's score against its target and every survivor, marked when
tests/mutation-survivors.md explains it as equivalent (a change of code that changes no
behaviour). It exits 1 when a module misses its target or a survivor is unexplained.

`--changed-functions REF` (CI, with REF = HEAD^1) runs only the mutants of the functions
whose lines the change since REF touches — every function when it touches the fast tests —
at most --max-mutants of them: above that, a sample chosen by HEAD's commit id (the same
commit always runs the same mutants). It exits 1 on an unexplained survivor among them or
one left unrun; a part of a module has no score to hold to the module's target.

    .venv/bin/python bench/mutation.py [--changed REF | --changed-functions REF
                                        [--max-mutants N]] [--report-only] [module ...]

Modules are named by path (integrations/quiet_hours.py). Needs PostgreSQL and Redis as the
tests do (DATABASE_URL, CELERY_BROKER_URL); mutmut's --reuse-db keeps one test database.
"""

import argparse
import ast
import json
import os
import random
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path

from mutmut.mutation.file_mutation import mutate_file_contents
from mutmut.mutation.trampoline_templates import mangle_function_name

ROOT = Path(__file__).resolve().parent.parent
MUTMUT = [str(Path(sys.executable).parent / "mutmut")]
SURVIVORS = ROOT / "tests" / "mutation-survivors.md"
RESULTS = ROOT / "mutants" / "scores.json"  # each module's results, as its last run left them

# The share of mutants the fast tests must kill, per module (issue 22).
TARGETS: dict[str, float] = {
    "integrations/policy.py": 0.90,
    "integrations/quiet_hours.py": 0.90,
    "integrations/sending.py": 0.90,
    "common/keywords.py": 0.90,
    "integrations/twilio/keywords.py": 0.90,
    "patients/zones.py": 0.90,
    "workflows/filters.py": 0.95,
    "workflows/rendering.py": 0.95,
}
# mutmut's exit codes, as mutmut.stats reads them: a failing test (or pytest's internal
# error), a timeout (the mistake made a loop endless) and a type-check error all catch it.
CAUGHT = {1, 3, 24, -24, 36, 37, 152, 255}
SURVIVED = {0, 5, 33}  # passed, or no test covers the mutated line


def _mutant_prefix(module: str) -> str:
    return module.removesuffix(".py").replace("/", ".")


def _git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=root, check=True, capture_output=True, text=True
    ).stdout


def changed_lines(ref: str, root: Path = ROOT) -> dict[str, set[int]]:
    """The lines of HEAD's version of each file the change since REF (since where HEAD and
    REF meet: HEAD^1 for a merge or a commit on main) touches; a deleted file has none. A
    deletion touches the lines either side of it."""
    lines: dict[str, set[int]] = {}
    path = ""
    diff = _git(root, "diff", "--unified=0", "--no-color", "--no-ext-diff", f"{ref}...HEAD")
    for line in diff.splitlines():
        if line.startswith("--- "):
            path = line.removeprefix("--- a/")  # kept only if the file is deleted
        elif line.startswith("+++ "):
            path = path if line == "+++ /dev/null" else line.removeprefix("+++ b/")
            lines.setdefault(path, set())
        elif hunk := re.match(r"@@ -\S+ \+(\d+)(?:,(\d+))? @@", line):
            start, count = int(hunk[1]), int(hunk[2] or 1)
            lines[path] |= set(range(start, start + count)) if count else {start, start + 1}
    return lines


def _fast_tests(root: Path = ROOT) -> list[str]:
    config = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["mutmut"]
    tests: list[str] = config["pytest_add_cli_args_test_selection"]
    return tests


def _changed(ref: str) -> list[str]:
    """The mutated modules changed since REF; all of them when their fast tests changed (a
    test may have stopped killing any module's mutants)."""
    changed = changed_lines(ref)
    if any(name in changed for name in _fast_tests()):
        return list(TARGETS)
    return [module for module in TARGETS if module in changed]


def functions(source: str) -> dict[str, tuple[int, int]]:
    """The first and last line (decorators included) of each function mutmut mutates — those
    at the top of the module and the methods of its classes — by mutmut's name for it."""
    spans: dict[str, tuple[int, int]] = {}
    for node in ast.parse(source).body:
        members = node.body if isinstance(node, ast.ClassDef) else [node]
        for member in members:
            if isinstance(member, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([member.lineno, *(d.lineno for d in member.decorator_list)])
                class_name = node.name if isinstance(node, ast.ClassDef) else None
                name = mangle_function_name(name=member.name, class_name=class_name)
                spans[name] = (start, member.end_lineno or member.lineno)
    return spans


def changed_functions(
    ref: str, modules: list[str], fast_tests: list[str], root: Path = ROOT
) -> dict[str, set[str]]:
    """For each of `modules` (paths) the change since REF touches, mutmut's names of its
    functions whose lines it touches — all the functions of every module when it touches
    one of `fast_tests`."""
    changed = changed_lines(ref, root)
    every = any(name in changed for name in fast_tests)
    touched: dict[str, set[str]] = {}
    for module in modules:
        if not (every or changed.get(module)) or not (root / module).exists():
            continue
        spans = functions((root / module).read_text())
        lines = changed.get(module, set())
        touched[module] = {
            name
            for name, (first, last) in spans.items()
            if every or any(first <= line <= last for line in lines)
        }
    return touched


def _mutants(module: str, names: set[str]) -> list[str]:
    """mutmut's mutants of the functions `names` of `module`, by full name."""
    mutated = mutate_file_contents(module, (ROOT / module).read_text())
    return [
        f"{_mutant_prefix(module)}.{mutant}"
        for mutant in mutated.mutant_names
        if mutant.rpartition("__mutmut_")[0] in names
    ]


def _sample(mutants: list[str], cap: int, seed: str) -> list[str]:
    """At most `cap` of `mutants`, the same ones for the same seed (random.Random seeds a
    text by its SHA-512, not by Python's per-process hash)."""
    if len(mutants) <= cap:
        return mutants
    return sorted(random.Random(seed).sample(sorted(mutants), cap))


def _explained() -> set[str]:
    """The mutants tests/mutation-survivors.md explains (a `name` in backticks at the start
    of a list item)."""
    if not SURVIVORS.exists():
        return set()
    return set(re.findall(r"^- `([\w.]+__mutmut_\d+)`", SURVIVORS.read_text(), re.MULTILINE))


def _results(module: str) -> dict[str, int | None]:
    """mutmut's exit code for each mutant of `module` (None: not run)."""
    meta = ROOT / "mutants" / f"{module}.meta"
    exit_codes: dict[str, int | None] = (
        json.loads(meta.read_text())["exit_code_by_key"] if meta.exists() else {}
    )
    return exit_codes


def _kept(module: str) -> dict[str, int | None]:
    """The results of `module`'s last run by this script, else mutmut's own."""
    kept = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results: dict[str, int | None] = kept.get(module) or _results(module)
    return results


def score(codes: dict[str, int | None], explained: set[str]) -> tuple[int, int, int]:
    """Of the mutants in `codes` that have run: how many were killed, how many survived as
    listed equivalents, and how many in all. The score held to the target is killed ÷ all
    (issue 22's "≥ 90 % killed"); killed ÷ (all − equivalent), the usual definition, which
    leaves out what no test can kill, is printed beside it."""
    checked = {name: code for name, code in codes.items() if code is not None}
    killed = sum(1 for code in checked.values() if code in CAUGHT)
    equivalent = sum(
        1 for name, code in checked.items() if code not in CAUGHT and name in explained
    )
    return killed, equivalent, len(checked)


def report(results: dict[str, dict[str, int | None]], *, targets: bool = True) -> bool:
    """Print each module's score among `results` (mutant: exit code, None if not run) and the
    survivors; whether every survivor is explained and, with `targets`, every module meets
    its target — without, whether every mutant asked for has run."""
    explained = _explained()
    ok = True
    print(
        f"{'module':34} {'killed':>7} {'equiv':>6} {'total':>6} {'score':>7} {'-equiv':>7}"
        f" {'target':>7}"
    )
    survivors: list[str] = []
    for module, codes in results.items():
        killed, equivalent, run = score(codes, explained)
        if not run:
            print(f"{module:34} {'not run':>7}")
            ok = False
            continue
        lost = sorted(
            name for name, code in codes.items() if code is not None and code not in CAUGHT
        )
        unchecked = len(codes) - run
        met = all(name in explained for name in lost) and (
            killed / run >= TARGETS[module] and not unchecked if targets else not unchecked
        )
        ok = ok and met
        print(
            f"{module:34} {killed:7} {equivalent:6} {run:6} {killed / run:7.1%}"
            f" {killed / (run - equivalent) if run > equivalent else 1.0:7.1%}"
            f" {f'{TARGETS[module]:7.0%}' if targets else '      -'}"
            f"{'' if met else '  MISSED'}{f'  ({unchecked} not run)' if unchecked else ''}"
        )
        survivors += [
            f"  {name} ({'equivalent' if name in explained else 'UNEXPLAINED'}, exit {codes[name]})"
            for name in lost
        ]
    if survivors:
        print("\nsurvivors (`.venv/bin/mutmut show NAME` shows the change):")
        print("\n".join(survivors))
    return ok


def _mutmut_run(mutants: list[str]) -> None:
    """mutmut on `mutants` (names or patterns), one child process: they share one test database."""
    subprocess.run(
        [*MUTMUT, "run", "--max-children", "1", *mutants],
        cwd=ROOT,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        check=False,
    )


def run_changed_functions(ref: str, cap: int, *, report_only: bool) -> bool:
    """Mutation-test the functions changed since REF (at most `cap` mutants); whether every
    survivor among them is explained."""
    touched = changed_functions(ref, list(TARGETS), _fast_tests())
    mutants = {module: _mutants(module, names) for module, names in touched.items()}
    every = [name for names in mutants.values() for name in names]
    head = _git(ROOT, "rev-parse", "HEAD").strip()
    chosen = set(_sample(every, cap, head))
    print(
        f"{len(every)} mutants in {sum(map(len, touched.values()))} functions changed since {ref}"
        + (
            f"; above the cap of {cap}: the {len(chosen)} that commit {head[:12]} chooses"
            if len(chosen) < len(every)
            else ""
        )
    )
    if not chosen:
        return True
    if not report_only:
        started = time.monotonic()
        _mutmut_run(sorted(chosen))
        print(f"\n{len(chosen)} mutants run in {time.monotonic() - started:.0f} s")
    results = {}
    for module, names in mutants.items():
        codes = _results(module)
        if ours := [name for name in names if name in chosen]:
            results[module] = {name: codes.get(name) for name in ours}
    return report(results, targets=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help="paths, e.g. integrations/quiet_hours.py")
    parser.add_argument("--changed", metavar="REF", help="only the modules changed since REF")
    parser.add_argument(
        "--changed-functions", metavar="REF", help="only the functions changed since REF (CI)"
    )
    parser.add_argument(
        "--max-mutants", type=int, default=300, help="with --changed-functions (default 300)"
    )
    parser.add_argument("--report-only", action="store_true", help="read the last results")
    args = parser.parse_args()
    unknown = [module for module in args.modules if module not in TARGETS]
    if unknown:
        parser.error(f"not a mutated module: {', '.join(unknown)} (one of {', '.join(TARGETS)})")
    if args.changed_functions:
        if args.modules or args.changed:
            parser.error("--changed-functions takes no modules and no --changed")
        ok = run_changed_functions(
            args.changed_functions, args.max_mutants, report_only=args.report_only
        )
        return 0 if ok else 1
    modules = args.modules or (_changed(args.changed) if args.changed else list(TARGETS))
    if not modules:
        print(f"no mutated module changed since {args.changed}: nothing to run")
        return 0
    if not args.report_only:
        dirty = _git(ROOT, "status", "--porcelain", "--untracked-files=no").strip()
        print(
            f"code: {_git(ROOT, 'rev-parse', 'HEAD').strip()}"
            + (" with uncommitted changes" if dirty else "")
            + "; a whole run that meets the targets on main: its commit goes to .ci/mutation-base"
        )
        # One module at a time. A run forgets the results of the modules it was not asked
        # for: each module's are kept as soon as it has run.
        for module in modules:
            _mutmut_run([f"{_mutant_prefix(module)}.*"])
            kept = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
            RESULTS.write_text(json.dumps({**kept, module: _results(module)}, indent=1))
    return 0 if report({module: _kept(module) for module in modules}) else 1


if __name__ == "__main__":
    sys.exit(main())
