"""The projector's exceptions: one root, driver errors translated at the boundary."""


class ProjectorError(RuntimeError):
    """Root of everything the projector raises on purpose."""


class MigrationError(ProjectorError):
    """A migration failed, or an applied migration file was changed afterwards."""


class FencedError(ProjectorError):
    """A batch's offset fence did not hold: another projector moved the partition on; roll back."""

    def __init__(self, partitions: list[tuple[str, int]]) -> None:
        super().__init__(f"offset fence lost for {partitions}")
        self.partitions = partitions


class DeadLetterError(ProjectorError):
    """The dead-letter topic did not acknowledge a record, so the batch must not be committed."""
