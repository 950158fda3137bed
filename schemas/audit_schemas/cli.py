"""`audit-schemas`: regenerate or check the committed JSON Schema files."""

from pathlib import Path

import typer

from audit_schemas import jsonschema

app = typer.Typer(help="Audit Trail event contracts.", no_args_is_help=True)


@app.command()
def export(
    directory: Path = typer.Option(jsonschema.SCHEMA_DIR, help="Where the .schema.json files live."),
    check: bool = typer.Option(False, help="Only report drift; exit 1 if any file is stale."),
) -> None:
    """Write (or with --check, verify) the JSON Schema for every event envelope."""
    if check:
        stale = jsonschema.drifted(directory)
        for name in stale:
            typer.echo(f"stale: {directory / name}", err=True)
        raise typer.Exit(1 if stale else 0)
    for path in jsonschema.write(directory):
        typer.echo(f"wrote {path}")


@app.callback()
def main() -> None:
    """Audit Trail event contracts."""
