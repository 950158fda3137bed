"""Create the project's topics with fixed partitions and infinite retention."""

import contextlib
from typing import Final

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from audit_projector.errors import DependencyUnavailableError, ProjectorError
from audit_schemas.topics import TOPIC_CONFIG


async def ensure_topics(bootstrap_servers: str, names: list[str], partitions: int) -> list[str]:
    """Create whichever of `names` do not exist yet; return those created. Existing ones are left alone."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=15_000)
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            topics = [
                NewTopic(name=n, num_partitions=partitions, replication_factor=1, topic_configs=dict(TOPIC_CONFIG))
                for n in missing
            ]
            with contextlib.suppress(TopicAlreadyExistsError):  # a concurrent start created it first
                await admin.create_topics(topics)
        return missing
    except KafkaError as e:
        kind = DependencyUnavailableError if e.retriable else ProjectorError
        raise kind(f"cannot create topics {names}: {e!r}") from e
    finally:
        await admin.close()


_REQUIRED: Final = {"cleanup.policy": "delete", "retention.ms": "-1", "retention.bytes": "-1"}


async def check_retention(bootstrap_servers: str, names: list[str]) -> None:
    """Refuse topics that could lose history: compaction or expiry would silently erase audit records."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=15_000)
    try:
        await admin.start()
        responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, n) for n in names])
    except KafkaError as e:
        kind = DependencyUnavailableError if e.retriable else ProjectorError
        raise kind(f"cannot read the configuration of {names}: {e!r}") from e
    finally:
        await admin.close()
    problems = []
    for response in responses:
        for error_code, message, _, name, entries in response.resources:
            if error_code:
                # 3 (unknown topic): metadata of a topic created a moment ago has not reached the broker yet.
                kind = DependencyUnavailableError if error_code == 3 else ProjectorError
                raise kind(f"cannot read the configuration of topic {name}: {message or error_code}")
            values = {entry[0]: entry[1] for entry in entries}
            problems += [
                f"{name}: {key}={values.get(key)} (must be {wanted})"
                for key, wanted in _REQUIRED.items()
                if values.get(key) != wanted
            ]
    if problems:
        raise ProjectorError(
            "refusing to project topics that compaction or retention could erase (history would vanish "
            "silently): " + "; ".join(problems)
        )
