"""The projector's exceptions: one root, driver errors translated at the boundary."""


class ProjectorError(RuntimeError):
    """Root of everything the projector raises on purpose."""

    retriable = False
    """True when the same work may succeed after reconnecting (the service restarts its pipeline)."""


class DependencyUnavailableError(ProjectorError):
    """Postgres or Kafka dropped or refused the connection; nothing was committed, try again."""

    retriable = True


class MigrationError(ProjectorError):
    """A migration failed, or an applied migration file was changed afterwards."""


class FencedError(ProjectorError):
    """A batch's offset fence did not hold: another projector moved the partition on; roll back."""

    def __init__(self, partitions: list[tuple[str, int]]) -> None:
        super().__init__(f"offset fence lost for {partitions}")
        self.partitions = partitions


class DeadLetterError(ProjectorError):
    """The dead-letter topic did not acknowledge a record, so the batch must not be committed."""

    retriable = True
