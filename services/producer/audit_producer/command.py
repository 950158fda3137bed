"""The `audit-producer` entry point: the command line when its extra is installed, a clear error otherwise."""

from audit_schemas.command import run_cli


def main() -> None:
    """`audit-producer`."""
    run_cli("audit-producer", "audit_producer.cli", "audit-trail-producer[cli]", ("typer", "click", "rich", "httpx"))
