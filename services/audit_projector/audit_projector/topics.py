"""Create the project's topics with fixed partitions and infinite retention."""

import contextlib

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
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
