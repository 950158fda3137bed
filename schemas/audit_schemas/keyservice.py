"""The key service's contract: a producer's signed request for its subjects' keys, and the grant it gets back.

The request body is signed like an event (`audit_schemas.signing`), with the key-request domain in place of the
topic (a name no Kafka topic can have), by a key in the producer-key registry that is valid for the tenant.
"""

from datetime import datetime
from typing import Annotated, Final
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from audit_schemas.sealing import Pseudonym
from audit_schemas.storable import Text

KEY_REQUEST_DOMAIN: Final = "audit-trail/key-request/v1"
"""Stands in the signed bytes where an event has its topic."""
KEY_REQUEST_SKEW_S: Final = 120.0
"""How far a request's `issued_at` may be from the service's clock."""
MAX_SUBJECTS: Final = 256

SubjectId = Annotated[Text, StringConstraints(min_length=1, max_length=256)]


class KeyRequest(BaseModel):
    """Which subjects of one tenant a producer needs keys for (fresh and single-use within the skew)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    subjects: Annotated[tuple[SubjectId, ...], Field(min_length=1, max_length=MAX_SUBJECTS)]
    issued_at: AwareDatetime
    request_id: UUID


class SubjectGrant(BaseModel):
    """One subject's pseudonym and current data key (base64url, 32 bytes)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    subject: SubjectId
    pseudonym: Pseudonym
    generation: Annotated[int, Field(ge=1)]
    key: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{43}$")]


class KeyGrant(BaseModel):
    """The answer: keys a producer may cache for at most `ttl_s` seconds (the documented erasure delay)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant: str
    ttl_s: Annotated[float, Field(gt=0)]
    issued_at: datetime
    keys: tuple[SubjectGrant, ...]
