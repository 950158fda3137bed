"""Multi-host DSNs split into one DSN per host with libpq's per-host `connect_timeout` (asyncpg spends one
deadline on all hosts, so a frozen first host would hide the promoted standby behind it)."""

import pytest

from audit_schemas.postgres import DEFAULT_HOST_TIMEOUT_S, split_hosts


def test_each_host_keeps_credentials_database_and_target() -> None:
    hosts, timeout = split_hosts(
        "postgresql://u:p%40ss@10.0.0.1:5432,10.0.0.2:5433/audit?target_session_attrs=read-write&sslmode=require"
    )
    assert hosts == [
        "postgresql://u:p%40ss@10.0.0.1:5432/audit?target_session_attrs=read-write&sslmode=require",
        "postgresql://u:p%40ss@10.0.0.2:5433/audit?target_session_attrs=read-write&sslmode=require",
    ]
    assert timeout == DEFAULT_HOST_TIMEOUT_S


def test_connect_timeout_is_per_host_and_never_reaches_the_server() -> None:
    hosts, timeout = split_hosts("postgresql://u@a:1,b:2/db?connect_timeout=3&application_name=x")
    assert timeout == 3.0
    assert all("connect_timeout" not in h for h in hosts)
    assert split_hosts("postgresql://u@a:1/db?connect_timeout=0")[1] == 1.0  # a floor, as libpq has one
    one, t = split_hosts("postgresql://u@a:1/db?connect_timeout=7")
    assert one == ["postgresql://u@a:1/db"]
    assert t == 7.0


@pytest.mark.parametrize(
    "dsn", ["postgresql://u@a:1/db", "postgres:///db?host=/run/postgresql", "host=a port=1 dbname=db"]
)
def test_other_forms_pass_through_whole(dsn: str) -> None:
    assert split_hosts(dsn) == ([dsn], DEFAULT_HOST_TIMEOUT_S)


def test_a_malformed_timeout_is_named() -> None:
    with pytest.raises(ValueError, match="connect_timeout must be a number"):
        split_hosts("postgresql://u@a:1,b:2/db?connect_timeout=soon")


@pytest.mark.parametrize("attrs", ["standby", "prefer-standby", "read-only"])
def test_the_query_api_refuses_a_write_dsn_that_may_land_on_a_standby(attrs: str) -> None:
    from pydantic import ValidationError

    from audit_query.config import Settings

    dsn = f"postgresql://q@a:1,b:2/audit?target_session_attrs={attrs}"
    with pytest.raises(ValidationError, match="AUDIT_QUERY_READ_DATABASE_URL"):
        Settings(environment="development", database_url=dsn)
    split = Settings(
        environment="development",
        database_url=dsn.replace(attrs, "read-write"),
        read_database_url=dsn,
    )
    assert split.read_dsn() == dsn
