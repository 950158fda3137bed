"""FastAPI dependencies: the shared repository, probe, cursor codec and settings."""

from typing import Annotated

from fastapi import Depends, Request

from audit_query.config import Settings
from audit_query.cursor import CursorCodec
from audit_query.kafka import KafkaProbe
from audit_query.repository import AuditRepository


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_repository(request: Request) -> AuditRepository:
    repository: AuditRepository = request.app.state.repository
    return repository


def get_probe(request: Request) -> KafkaProbe:
    probe: KafkaProbe = request.app.state.kafka
    return probe


def get_codec(request: Request) -> CursorCodec:
    codec: CursorCodec = request.app.state.cursor_codec
    return codec


SettingsDep = Annotated[Settings, Depends(get_settings)]
RepositoryDep = Annotated[AuditRepository, Depends(get_repository)]
ProbeDep = Annotated[KafkaProbe, Depends(get_probe)]
CodecDep = Annotated[CursorCodec, Depends(get_codec)]
