"""`make mutation`: mutation testing of the modules that decide whether a patient is texted.

mutmut (configured in pyproject.toml, [tool.mutmut]) puts small deliberate mistakes into
each module and runs the fast tests that cover the mutated function; a mistake no test
notices survives. This script runs it for the modules asked (all by default; `--changed
REF` takes those a change since REF touches, and all of them when it touches their fast
tests, for CI), then prints each module's score
against its target and every survivor, marked when tests/mutation-survivors.md explains it
as equivalent (a change of code that changes no behaviour). It exits 1 when a module misses
its target or a survivor is unexplained.

    .venv/bin/python bench/mutation.py [--changed REF] [--report-only] [module ...]

Modules are named by path (integrations/quiet_hours.py). Needs PostgreSQL and Redis as the
tests do (DATABASE_URL, CELERY_BROKER_URL); mutmut's --reuse-db keeps one test database.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

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


def _changed(ref: str) -> list[str]:
    names = subprocess.run(
        ["git", "diff", "--name-only", f"{ref}...HEAD"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]
    if any(name in config["pytest_add_cli_args_test_selection"] for name in names):
        return list(TARGETS)  # a fast test changed: it may have stopped killing any module's
    return [module for module in TARGETS if module in names]


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


def report(modules: list[str]) -> bool:
    """Print each module's score and survivors; whether every target is met."""
    explained = _explained()
    ok = True
    print(f"{'module':34} {'killed':>7} {'total':>6} {'score':>7} {'target':>7}")
    survivors: list[str] = []
    for module in modules:
        results = _kept(module)
        checked = {name: code for name, code in results.items() if code is not None}
        if not checked:
            print(f"{module:34} {'not run':>7}")
            ok = False
            continue
        killed = sum(1 for code in checked.values() if code in CAUGHT)
        lost = sorted(name for name, code in checked.items() if code not in CAUGHT)
        score = killed / len(checked)
        met = score >= TARGETS[module] and all(name in explained for name in lost)
        ok = ok and met
        unchecked = len(results) - len(checked)
        print(
            f"{module:34} {killed:7} {len(checked):6} {score:7.1%} {TARGETS[module]:7.0%}"
            f"{'' if met else '  MISSED'}{f'  ({unchecked} not run)' if unchecked else ''}"
        )
        survivors += [
            f"  {name} ({'equivalent' if name in explained else 'UNEXPLAINED'}, exit "
            f"{checked[name]})"
            for name in lost
        ]
    if survivors:
        print("\nsurvivors (`.venv/bin/mutmut show NAME` shows the change):")
        print("\n".join(survivors))
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help="paths, e.g. integrations/quiet_hours.py")
    parser.add_argument("--changed", metavar="REF", help="only the modules changed since REF")
    parser.add_argument("--report-only", action="store_true", help="read the last results")
    args = parser.parse_args()
    unknown = [module for module in args.modules if module not in TARGETS]
    if unknown:
        parser.error(f"not a mutated module: {', '.join(unknown)} (one of {', '.join(TARGETS)})")
    modules = args.modules or (_changed(args.changed) if args.changed else list(TARGETS))
    if not modules:
        print(f"no mutated module changed since {args.changed}: nothing to run")
        return 0
    if not args.report_only:
        # One module at a time, one child process: the mutants share one test database. A
        # run forgets the results of the modules it was not asked for: each module's are
        # kept as soon as it has run.
        for module in modules:
            subprocess.run(
                [*MUTMUT, "run", "--max-children", "1", f"{_mutant_prefix(module)}.*"],
                cwd=ROOT,
                env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
                check=False,
            )
            kept = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
            RESULTS.write_text(json.dumps({**kept, module: _results(module)}, indent=1))
    return 0 if report(modules) else 1


if __name__ == "__main__":
    sys.exit(main())
