"""`python -m audit_projector`."""

from audit_projector.cli import app

app()
