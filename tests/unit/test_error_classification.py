"""The one place per service that classifies driver errors: record poison vs not the record's fault vs retry."""

import asyncpg
import pytest

from audit_projector.errors import (
    DatabaseError,
    DependencyUnavailableError,
    RecordDataError,
    classify_db_error,
)
from audit_query.errors import StoreUnavailableError
from audit_query.errors import classify_db_error as classify_query_error

E = asyncpg.exceptions


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (E.CharacterNotInRepertoireError("NUL"), RecordDataError),  # 22021
        (E.UntranslatableCharacterError("\\u0000"), RecordDataError),  # 22P05
        (E.NumericValueOutOfRangeError("bigint"), RecordDataError),  # 22003
        (E.StringDataRightTruncationError("too long"), RecordDataError),  # 22001
        (E.InvalidTextRepresentationError("NaN"), RecordDataError),  # 22P02
        (E.ProgramLimitExceededError("index row too big"), RecordDataError),  # 54000
        (UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"), RecordDataError),
        (OverflowError("value out of int64 range"), RecordDataError),
        (E.CheckViolationError("no partition of relation found for row"), DatabaseError),  # 23514
        (E.InsufficientPrivilegeError("permission denied"), DatabaseError),  # 42501
        (E.UndefinedTableError("gone"), DatabaseError),
        (E.DiskFullError("disk full"), DependencyUnavailableError),  # 53100: may pass once space is freed
        (E.DeadlockDetectedError("deadlock"), DependencyUnavailableError),  # 40P01
        (E.LockNotAvailableError("lock timeout"), DependencyUnavailableError),  # 55P03
        (E.AdminShutdownError("terminating"), DependencyUnavailableError),  # 57P01
        (E.ConnectionDoesNotExistError("closed"), DependencyUnavailableError),
        (asyncpg.InterfaceError("connection is closed"), DependencyUnavailableError),
        (ConnectionRefusedError("refused"), DependencyUnavailableError),
    ],
)
def test_projector_classifies_each_driver_error(error: BaseException, kind: type) -> None:
    assert type(classify_db_error("batch", error)) is kind


def test_the_projector_never_calls_a_configuration_fault_poison() -> None:
    for error in (E.CheckViolationError("x"), E.InsufficientPrivilegeError("x"), E.RaiseError("x")):
        assert not isinstance(classify_db_error("batch", error), RecordDataError)


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.InterfaceError("connection is closed"),
        E.ConnectionDoesNotExistError("closed mid-operation"),
        E.InternalClientError("cannot switch to state 12"),
        E.AdminShutdownError("terminating connection"),
        E.QueryCanceledError("statement timeout"),
        OSError("network unreachable"),
    ],
)
def test_query_api_maps_lost_connections_and_timeouts_to_503(error: BaseException) -> None:
    mapped = classify_query_error(error)
    assert isinstance(mapped, StoreUnavailableError)
    assert mapped.status_code == 503


def test_query_api_leaves_bugs_unclassified() -> None:
    assert classify_query_error(E.UndefinedColumnError("typo in SQL")) is None
