"""Where a bench writes its figures as JSON (beside printing its table), and the writing."""

import json
import tempfile
from pathlib import Path


def default_path(name: str) -> Path:
    """`$TMPDIR/audit-trail-bench/<name>.json`: out of the work tree."""
    return Path(tempfile.gettempdir()) / "audit-trail-bench" / f"{name}.json"


def write(out: Path, figures: dict[str, object]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=1))
