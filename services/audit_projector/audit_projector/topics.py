"""Create the project's topics with fixed partitions and infinite retention."""

from typing import Any, Final

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, TopicAuthorizationFailedError

from audit_projector.errors import DependencyUnavailableError, ProjectorError
from audit_schemas.kafka_security import KafkaSecurity
from audit_schemas.topics import TOPIC_CONFIG


def _admin(bootstrap_servers: str, security: KafkaSecurity | None) -> AIOKafkaAdminClient:
    options = (security or KafkaSecurity()).client_options()
    return AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=15_000, **options)


REPLICATION: Final = 3
"""Replicas of each topic on a cluster of three brokers or more: one broker may fail, a second may be down for
maintenance meanwhile, and `min.insync.replicas` = 2 still holds every acknowledged record on two disks."""


def replication_for(brokers: int) -> tuple[int, int]:
    """The replication factor and `min.insync.replicas` for a cluster of `brokers` brokers."""
    factor = max(1, min(REPLICATION, brokers))
    return factor, 2 if factor >= REPLICATION else 1


async def ensure_topics(
    bootstrap_servers: str, names: list[str], partitions: int, security: KafkaSecurity | None = None
) -> list[str]:
    """Create whichever of `names` do not exist yet; return those created. Existing ones are left alone.

    Replicated three times (with `min.insync.replicas` 2) on a cluster of three brokers or more, as many times as
    there are brokers on a smaller one (development). Under ACLs only an admin may create topics; a service
    principal sees its topics exist and creates nothing.
    """
    admin = _admin(bootstrap_servers, security)
    missing = list(names)
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            factor, in_sync = replication_for(len((await admin.describe_cluster())["brokers"]))
            config = {**TOPIC_CONFIG, "min.insync.replicas": str(in_sync), "unclean.leader.election.enable": "false"}
            topics = [
                NewTopic(name=n, num_partitions=partitions, replication_factor=factor, topic_configs=dict(config))
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
    bootstrap_servers: str,
    names: list[str],
    security: KafkaSecurity | None = None,
    broker_time: bool = False,
    *,
    replicated: bool = False,
) -> None:
    """Refuse topics that could lose history: compaction or expiry would silently erase audit records. With
    `broker_time` (signatures required) also refuse publisher-chosen timestamps: a key's validity window is judged
    by the record's timestamp, which a holder of a retired key could otherwise backdate. With `replicated` (outside
    development) refuse topics that one lost broker could take acknowledged records with: fewer than three
    replicas, `min.insync.replicas` below two (or not below the replica count), unclean leader election."""
    required = {**_REQUIRED, "message.timestamp.type": "LogAppendTime"} if broker_time else dict(_REQUIRED)
    if replicated:
        required["unclean.leader.election.enable"] = "false"
    admin = _admin(bootstrap_servers, security)
    try:
        await admin.start()
        responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, n) for n in names])
        described = await admin.describe_topics(names) if replicated else []
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
            if replicated:
                problems += _replication_problems(name, values, described)
    if problems:
        raise ProjectorError(
            "refusing to project topics that compaction, retention or a lost broker could erase (history would "
            "vanish silently) or whose timestamps the publisher chooses while signatures are required: "
            + "; ".join(problems)
        )


def _replication_problems(name: str, values: dict[str, str], described: list[dict[str, Any]]) -> list[str]:
    """Why `name` could lose an acknowledged record with one broker: too few replicas or in-sync replicas."""
    replicas = min(
        (len(p.get("replicas") or ()) for d in described if d.get("topic") == name for p in d.get("partitions") or ()),
        default=0,
    )
    in_sync = int(values.get("min.insync.replicas") or 1)
    problems = []
    if replicas < REPLICATION:
        problems.append(f"{name}: replication factor {replicas} (must be at least {REPLICATION})")
    if in_sync < 2 or in_sync >= max(replicas, 1):
        problems.append(
            f"{name}: min.insync.replicas={in_sync} (must be at least 2 and below the replication factor {replicas})"
        )
    return problems
