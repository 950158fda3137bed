"""Console entry points that need an extra: the command line when it is installed, a clear error otherwise."""

import importlib
import sys
from collections.abc import Callable, Iterable


def run_cli(command: str, module: str, install: str, needs: Iterable[str]) -> None:
    """Import `module` and run its Typer `app`; if one of the modules in `needs` is missing, say which extra to
    install (`install`, a pip requirement) on stderr and exit 2 instead of a traceback."""
    try:
        app: Callable[[], object] = importlib.import_module(module).app
    except ModuleNotFoundError as e:
        if e.name not in set(needs):
            raise
        sys.stderr.write(
            f"{command}: the command line needs the 'cli' extra ({e.name} is not installed): pip install '{install}'\n"
        )
        raise SystemExit(2) from e
    app()


def main() -> None:
    """`audit-schemas`."""
    run_cli("audit-schemas", "audit_schemas.cli", "audit-trail-schemas[cli]", ("typer", "click", "rich"))
