"""`audit-schemas`: regenerate or check the committed JSON Schema files; verify proofs and archives offline."""

from collections.abc import Callable
from pathlib import Path

import typer

from audit_schemas import archive, jsonschema, verify

app = typer.Typer(help="Audit Trail event contracts.", no_args_is_help=True)

WITNESS_HELP = "A witness's verifier key (name+hash+base64 of 0x04 and its Ed25519 key); repeat for several."
MIN_HELP = "How many of the pinned witnesses must have cosigned each checkpoint (k of n)."


def _policy(key: list[str], witness: list[str], min_witnesses: int) -> verify.TrustPolicy:
    try:
        return verify.policy(key, witness, min_witnesses)
    except verify.VerificationError as e:
        typer.echo(f"NOT VERIFIED: {e}", err=True)
        raise typer.Exit(2) from e


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


@app.command("verify-inclusion")
def verify_inclusion(
    proof: Path = typer.Argument(..., exists=True, dir_okay=False, help="JSON from GET /v1/audit/{id}/proof."),
    key: list[str] = typer.Option(..., help="Verifier key(s) of the log (name+hash+base64); repeat for several."),
    witness: list[str] = typer.Option([], help=WITNESS_HELP),
    min_witnesses: int = typer.Option(0, "--min-witnesses", help=MIN_HELP),
) -> None:
    """Check offline that an entry is in the log the signed (and witnessed) checkpoint commits to."""
    trusted = _policy(key, witness, min_witnesses)
    _report(lambda: verify.verify_inclusion_proof(verify.load_json(proof.read_text()), trusted))


@app.command("verify-consistency")
def verify_consistency(
    old: Path = typer.Argument(..., exists=True, dir_okay=False, help="The older signed checkpoint you kept."),
    new: Path = typer.Argument(..., exists=True, dir_okay=False, help="A newer signed checkpoint."),
    proof: Path = typer.Argument(..., exists=True, dir_okay=False, help="JSON from /v1/checkpoints/consistency."),
    key: list[str] = typer.Option(..., help="Verifier key(s) of the log; repeat for several."),
    witness: list[str] = typer.Option([], help=WITNESS_HELP),
    min_witnesses: int = typer.Option(0, "--min-witnesses", help=MIN_HELP),
) -> None:
    """Check offline that the log only grew between two checkpoints (the append-only guarantee)."""
    trusted = _policy(key, witness, min_witnesses)
    _report(
        lambda: verify.verify_consistency_proof(
            old.read_text(), new.read_text(), verify.load_json(proof.read_text()), trusted
        )
    )


@app.command("verify-bundle")
def verify_bundle(
    bundle: Path = typer.Argument(..., exists=True, dir_okay=False, help="NDJSON from GET /v1/proofs."),
    key: list[str] = typer.Option(..., help="Verifier key(s) of the log; repeat for several."),
    witness: list[str] = typer.Option([], help=WITNESS_HELP),
    min_witnesses: int = typer.Option(0, "--min-witnesses", help=MIN_HELP),
) -> None:
    """Check offline that every entry of an exported bundle is in the signed (and witnessed) log."""
    trusted = _policy(key, witness, min_witnesses)
    _report(lambda: verify.verify_bundle(bundle.read_text(), trusted))


@app.command("verify-archive")
def verify_archive(
    files: list[Path] = typer.Argument(..., exists=True, dir_okay=False, help="Archive files (.ndjson.gz)."),
    key: list[str] = typer.Option(..., help="Verifier key(s) of the log; repeat for several."),
    witness: list[str] = typer.Option([], help=WITNESS_HELP),
    min_witnesses: int = typer.Option(0, "--min-witnesses", help=MIN_HELP),
) -> None:
    """Check archives offline: each partition's files from leaf 0 on, joined up, rebuilding their signed roots."""
    trusted = _policy(key, witness, min_witnesses)
    try:
        done = archive.verify_chain(files, trusted)
    except archive.ArchiveError as e:
        typer.echo(f"NOT VERIFIED: {e}", err=True)
        raise typer.Exit(1) from e
    for a in done:
        h = a.header
        typer.echo(
            f"verified: {h.origin} leaves {h.first_leaf}..{h.end_leaf - 1} (offsets {h.first_offset}.."
            f"{h.end_offset - 1}), {a.nodes} nodes, signed root at {a.checkpoint.size}"
        )


def _report(check: Callable[[], verify.Verified]) -> None:
    try:
        verified = check()
    except verify.VerificationError as e:
        typer.echo(f"NOT VERIFIED: {e}", err=True)
        raise typer.Exit(1) from e
    typer.echo(f"verified: {verified.detail}")


@app.callback()
def main() -> None:
    """Audit Trail event contracts."""
