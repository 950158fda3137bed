"""The `audit-schemas` entry point: the command line when its extra is installed, a clear error otherwise."""

import sys

CLI_MODULES = frozenset({"typer", "click", "rich"})


def main() -> None:
    """Run `audit_schemas.cli`, or exit 2 naming the extra to install if typer is missing."""
    try:
        from audit_schemas.cli import app
    except ModuleNotFoundError as e:
        if e.name not in CLI_MODULES:
            raise
        sys.stderr.write(
            f"audit-schemas: the command line needs the 'cli' extra ({e.name} is not installed): "
            "pip install 'audit-trail-schemas[cli]'\n"
        )
        raise SystemExit(2) from e
    app()
