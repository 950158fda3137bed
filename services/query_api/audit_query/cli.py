"""`audit-query`: serve the HTTP API and web UI."""

import typer
import uvicorn
from pydantic import ValidationError
from rich.console import Console

from audit_query.config import Settings
from audit_query.main import create_app

app = typer.Typer(help="Audit Trail query API.", no_args_is_help=True)
console = Console(stderr=True)


@app.command()
def serve(
    host: str | None = typer.Option(None, help="Bind address (default AUDIT_QUERY_HOST)."),
    port: int | None = typer.Option(None, help="Port (default AUDIT_QUERY_PORT)."),
) -> None:
    """Serve the API (OpenAPI docs at /docs) and the web UI at /."""
    try:
        settings = Settings()
    except ValidationError as e:
        console.print(f"[red]invalid AUDIT_QUERY_* settings:[/red]\n{e}")
        raise typer.Exit(2) from e
    uvicorn.run(create_app(settings), host=host or settings.host, port=port or settings.port, log_level="info")


@app.callback()
def main() -> None:
    """Audit Trail query API."""
