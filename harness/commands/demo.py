"""`facehil demo` (what `make demo` runs): the nightly suite on the simulated station.

Records into a SQLite file and writes the HTML report and JUnit XML under ./out/, then prints
the report's path.
"""

from __future__ import annotations

from pathlib import Path

import typer

from harness.commands.run import RunOptions, run_suite

app = typer.Typer(no_args_is_help=False)


@app.callback(invoke_without_command=True)
def demo(
    out: Path = typer.Option(Path("out"), "--out", help="Folder for the database, report and logs."),
    suite: str = typer.Option("nightly", "--suite", help="Suite to run (smoke for a quick look)."),
    faults: str = typer.Option(None, "--faults", help="Reader faults NAME,... to show what a failing run looks like."),
) -> None:
    """Run the nightly suite against the simulated station and print the report's path."""
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    opts = RunOptions(suite=suite, db=f"sqlite:///{out / 'facehil.sqlite'}", report_dir=out / "report",
                      junit=out / "junit.xml", faults=faults, log_path=out / "pytest.log")
    result = run_suite(opts)
    if result.report_path is not None:
        print(result.report_path)
    raise typer.Exit(result.exit_code)
