"""Create the project's topics with fixed partitions and infinite retention."""

from typing import Final

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, TopicAuthorizationFailedError

from audit_projector.errors import DependencyUnavailableError, ProjectorError
from audit_schemas.kafka_security import KafkaSecurity
from audit_schemas.topics import TOPIC_CONFIG


def _admin(bootstrap_servers: str, security: KafkaSecurity | None) -> AIOKafkaAdminClient:
    options = (security or KafkaSecurity()).client_options()
    return AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=15_000, **options)


async def ensure_topics(
    bootstrap_servers: str, names: list[str], partitions: int, security: KafkaSecurity | None = None
) -> list[str]:
    """Create whichever of `names` do not exist yet; return those created. Existing ones are left alone.

    Under ACLs only an admin may create topics; a service principal sees its topics exist and creates nothing.
    """
    admin = _admin(bootstrap_servers, security)
    missing = list(names)
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            topics = [
                NewTopic(name=n, num_partitions=partitions, replication_factor=1, topic_configs=dict(TOPIC_CONFIG))
                for n in missing
            ]
            try:
                response = await admin.create_topics(topics)
            except TopicAlreadyExistsError:  # a concurrent start created it first
                return missing
            errors = {t[0]: t[1] for t in response.topic_errors if t[1] not in (0, TopicAlreadyExistsError.errno)}
            if any(code == TopicAuthorizationFailedError.errno for code in errors.values()):
                raise TopicAuthorizationFailedError(sorted(errors))
            if errors:
                raise ProjectorError(f"cannot create topics: error codes {errors}")
        return missing
    except TopicAuthorizationFailedError as e:
        raise ProjectorError(
            f"topics {missing} are missing or not visible to this principal, and it may not create them: "
            f"an admin creates topics and grants Describe on them (`audit-projector topics` as admin): {e!r}"
        ) from e
    except KafkaError as e:
        kind = DependencyUnavailableError if e.retriable else ProjectorError
        raise kind(f"cannot create topics {names}: {e!r}") from e
    finally:
        await admin.close()


async def partitions_of(
    bootstrap_servers: str, names: list[str], security: KafkaSecurity | None = None
) -> dict[str, list[int]]:
    """The partition numbers of each topic (a topic the broker does not know has none)."""
    admin = _admin(bootstrap_servers, security)
    try:
        await admin.start()
        described = await admin.describe_topics(names)
    except KafkaError as e:
        kind = DependencyUnavailableError if e.retriable else ProjectorError
        raise kind(f"cannot describe topics {names}: {e!r}") from e
    finally:
        await admin.close()
    return {d["topic"]: sorted(p["partition"] for p in d.get("partitions") or ()) for d in described}


_REQUIRED: Final = {"cleanup.policy": "delete", "retention.ms": "-1", "retention.bytes": "-1"}


async def check_retention(
    bootstrap_servers: str, names: list[str], security: KafkaSecurity | None = None, broker_time: bool = False
) -> None:
    """Refuse topics that could lose history: compaction or expiry would silently erase audit records. With
    `broker_time` (signatures required) also refuse publisher-chosen timestamps: a key's validity window is judged
    by the record's timestamp, which a holder of a retired key could otherwise backdate."""
    required = {**_REQUIRED, "message.timestamp.type": "LogAppendTime"} if broker_time else _REQUIRED
    admin = _admin(bootstrap_servers, security)
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
                for key, wanted in required.items()
                if values.get(key) != wanted
            ]
    if problems:
        raise ProjectorError(
            "refusing to project topics that compaction or retention could erase (history would vanish "
            "silently) or whose timestamps the publisher chooses while signatures are required: " + "; ".join(problems)
        )
