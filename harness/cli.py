"""`facehil` command line: one Typer app, one sub-app per area (see harness/commands/)."""

from __future__ import annotations

import logging

import typer

from harness.commands import sim as sim_cmd

app = typer.Typer(help="facehil: hardware-in-the-loop tests for face-authentication card readers.",
                  no_args_is_help=True, pretty_exceptions_show_locals=False)
app.add_typer(sim_cmd.app, name="sim", help="Start, inspect and stop the simulated station.")


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at DEBUG level.")) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(message)s",
                        handlers=[RichHandler(show_path=False)])


if __name__ == "__main__":
    app()
