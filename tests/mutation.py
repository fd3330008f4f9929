"""Mutation testing of the pure core (`make mutation`): mutmut mutates one module at a time and runs
only the fast unit tests that cover it, then this prints each module's score and fails below GOAL.

Each module gets its own scratch folder under build/mutation/, so its mutmut configuration (what to
mutate, which tests) stays out of pyproject.toml and runs never share mutmut's cache of results.

    python -m tests.mutation [--jobs N] [MODULE ...]     # MODULE: a path from MODULES, default all
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRATCH = ROOT / "build" / "mutation"
GOAL = 85.0
"""Percent of mutants the tests must kill in each module."""

FOLD_TESTS = ["tests/unit/test_fold.py", "tests/unit/test_fold_intake.py", "tests/unit/test_fold_runs.py"]
MODULES: dict[str, list[str]] = {
    "daemon/core/fold.py": FOLD_TESTS,
    "daemon/core/state.py": FOLD_TESTS,
    "daemon/runs/scheduler.py": ["tests/unit/test_scheduler.py"],
    "daemon/runs/dispatch.py": ["tests/unit/test_dispatch.py", "tests/unit/test_dispatch_questions.py"],
    "daemon/runs/outcome.py": ["tests/unit/test_outcome.py", "tests/unit/test_outcome_ends.py"],
    "daemon/intake/decide.py": ["tests/unit/test_intake.py", "tests/unit/test_intake_decide.py"],
}
"""Module -> the unit tests that state its behaviour (the only ones run against its mutants)."""

KILLED = ("killed", "timeout")
"""mutmut's verdicts that count as a kill: a mutant that hangs a test is caught by it too."""


def _prepare(module: str, tests: list[str]) -> Path:
    work = SCRATCH / module.removesuffix(".py").replace("/", ".")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    for name in ("daemon", "tests"):
        (work / name).symlink_to(ROOT / name, target_is_directory=True)
    shutil.copy(ROOT / "pyproject.toml", work / "pyproject.toml")
    selection = "".join(f"\n    {t}" for t in tests)
    (work / "setup.cfg").write_text(
        "[mutmut]\n"
        "source_paths = daemon\n"
        f"only_mutate = {module}\n"
        f"pytest_add_cli_args_test_selection ={selection}\n"
        "pytest_add_cli_args = -p no:randomly\n"
    )
    return work


def _mutmut(work: Path, *args: str, log: Path | None = None) -> str:
    mutmut = str(Path(sys.executable).with_name("mutmut"))
    out = subprocess.run(
        [mutmut, *args],
        cwd=work,
        stdout=subprocess.PIPE if log is None else log.open("w"),
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(
            f"mutmut {' '.join(args)} failed in {work} (exit {out.returncode}); see {log or 'above'}"
        )
    return out.stdout or ""


def run_module(module: str, tests: list[str], jobs: int) -> tuple[int, int, list[str]]:
    """Killed, total and the lines naming every mutant not killed, with its verdict."""
    work = _prepare(module, tests)
    _mutmut(work, "run", "--max-children", str(jobs), log=work / "run.log")
    verdicts = [
        line.strip() for line in _mutmut(work, "results", "--all", "true").splitlines() if ": " in line
    ]
    survivors = [v for v in verdicts if v.rsplit(": ", 1)[1] not in KILLED]
    return len(verdicts) - len(survivors), len(verdicts), survivors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", metavar="MODULE", help=f"any of {', '.join(MODULES)}")
    parser.add_argument("--jobs", type=int, default=2, help="mutants tested at once (default 2)")
    args = parser.parse_args(argv)
    unknown = set(args.modules) - set(MODULES)
    if unknown:
        parser.error(f"not a module of the pure core: {', '.join(sorted(unknown))}")
    failed = []
    for module in args.modules or MODULES:
        killed, total, survivors = run_module(module, MODULES[module], args.jobs)
        score = 100.0 * killed / total if total else 100.0
        for line in survivors:
            print(f"  {line}")
        print(f"{module}: {killed}/{total} killed, {score:.1f} %", flush=True)
        if score < GOAL:
            failed.append(module)
    if failed:
        print(f"below {GOAL:.0f} %: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
