"""Export the envelopes as JSON Schema files, for publishers written in other languages."""

import json
from pathlib import Path
from typing import Final

from pydantic import BaseModel

from audit_schemas.envelope import ActionEvent, ExecutionLogEvent, OutcomeEvent

SCHEMA_DIR: Final = Path(__file__).resolve().parent.parent / "json"
"""`schemas/json/` in the source tree: the committed copies."""

EXPORTS: Final[dict[str, type[BaseModel]]] = {
    "audit.action.v1.schema.json": ActionEvent,
    "audit.outcome.v1.schema.json": OutcomeEvent,
    "execution.log.v1.schema.json": ExecutionLogEvent,
}


def render() -> dict[str, str]:
    """File name → JSON Schema text, exactly as committed."""
    rendered = {}
    for name, model in EXPORTS.items():
        schema = model.model_json_schema(mode="validation")
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://audittrail.dev/schemas/{name}"
        rendered[name] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return rendered


def drifted(directory: Path = SCHEMA_DIR) -> list[str]:
    """Names of the committed files that differ from what the models now produce."""
    return [
        name
        for name, text in render().items()
        if not (directory / name).is_file() or (directory / name).read_text() != text
    ]


def write(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Regenerate every file; return what was written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render().items():
        path = directory / name
        path.write_text(text)
        written.append(path)
    return written
