"""The `audit-producer` entry point: the command line when its extra is installed, a clear error otherwise."""

import sys

CLI_MODULES = frozenset({"typer", "click", "rich", "httpx"})


def main() -> None:
    """Run `audit_producer.cli`, or exit 2 naming the extra to install if one of its modules is missing."""
    try:
        from audit_producer.cli import app
    except ModuleNotFoundError as e:
        if e.name not in CLI_MODULES:
            raise
        sys.stderr.write(
            f"audit-producer: the command line needs the 'cli' extra ({e.name} is not installed): "
            "pip install 'audit-trail-producer[cli]'\n"
        )
        raise SystemExit(2) from e
    app()
