"""Functions that run with the owner's rights act only on registered read models: the reviewed attack (a reader's
temporary schema with look-alike tables and functions), a schema of the caller's own, look-alikes shadowing built-ins
in `public`, a retired model — each refused with a clear error, nothing run as the owner; and an upgrade from the
previous head removes the vulnerable copies from existing live and shadow schemas."""

import contextlib
from collections.abc import AsyncIterator
from uuid import uuid4

import asyncpg
import pytest

from audit_producer import AuditProducer
from audit_projector.integrity import verify_integrity
from audit_projector.migrations import bundled, migrate, register_on
from tests.conftest import Isolated, projector_running
from tests.factories import publish_events
from tests.history import record_history
from tests.polling import eventually

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

ELEVATED = {"merkle_leaf_of", "ensure_month_partition"}
"""Every SECURITY DEFINER function the migrations create: each takes `target_schema` and checks the registry."""

ANY_ID = "01890000-0000-7000-8000-000000000000"


def _attack(victim: str, control: str) -> list[str]:
    """The review's complete reproduction: look-alike tables and functions in the caller's own pg_temp, whose
    `tenant_visible` creates a table in the read model and counts every token — if it ever runs as the owner."""
    return [
        "CREATE TEMP TABLE audit_entries (audit_id uuid, tenant_id text, kafka_topic text, kafka_partition int,"
        " kafka_offset bigint)",
        "CREATE TEMP TABLE merkle_leaves (topic text, partition int, leaf_index bigint, kafka_offset bigint,"
        " leaf_data bytea)",
        f"INSERT INTO pg_temp.audit_entries VALUES ('{ANY_ID}', 'x', 't', 0, 0)",
        "INSERT INTO pg_temp.merkle_leaves VALUES ('t', 0, 0, 0, '\\x00')",
        "GRANT SELECT ON pg_temp.audit_entries, pg_temp.merkle_leaves TO PUBLIC",
        f"""CREATE FUNCTION pg_temp.tenant_visible(text) RETURNS boolean LANGUAGE plpgsql AS $$
            BEGIN
                CREATE TABLE {victim}.pwned AS SELECT (SELECT count(*) FROM {control}.api_tokens) AS tokens;
                RETURN true;
            END $$""",
        """CREATE FUNCTION pg_temp.merkle_leaf_of(text, uuid)
           RETURNS TABLE (topic text, partition integer, leaf_index bigint, kafka_offset bigint, leaf_data bytea)
           LANGUAGE sql AS $$ SELECT 't', 0, 0::bigint, 0::bigint, '\\x00'::bytea $$""",
    ]


async def _pwned(isolated: Isolated, schema: str) -> bool:
    async with isolated.owner() as conn:
        return bool(await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"{schema}.pwned"))


@contextlib.asynccontextmanager
async def _as(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(dsn)
    try:
        yield conn
    finally:
        await conn.close()


async def _refused(conn: asyncpg.Connection, sql: str, *args: object) -> str:
    """Run `sql` expecting a refusal; the error's text."""
    with pytest.raises((asyncpg.InsufficientPrivilegeError, asyncpg.UndefinedFunctionError)) as caught:
        await conn.fetch(sql, *args)
    return str(caught.value)


async def test_the_reviewed_attack_is_refused_and_nothing_runs_as_the_owner(isolated: Isolated) -> None:
    schema, control = isolated.name, isolated.query.control_schema
    async with _as(isolated.stack.query_dsn) as reader:
        for sql in _attack(schema, control):
            await reader.execute(sql)
        temp = "pg_my_temp_schema()::regnamespace::text"
        # Where the function used to be: gone from the read model.
        gone = await _refused(reader, f"SELECT * FROM {schema}.merkle_leaf_of({temp}, $1)", ANY_ID)
        assert "does not exist" in gone
        # Where it is now: the caller's temporary schema is not a registered read model.
        text = await _refused(reader, f"SELECT * FROM {control}.merkle_leaf_of({temp}, $1)", ANY_ID)
        assert "is not a registered read-model schema" in text
    async with _as(str(isolated.projector.database_url)) as writer:
        await writer.execute(
            "CREATE TEMP TABLE audit_entries (occurred_at timestamptz) PARTITION BY RANGE (occurred_at);"
            "CREATE TEMP TABLE audit_entries_default PARTITION OF audit_entries DEFAULT"
        )
        gone = await _refused(writer, f"SELECT {schema}.ensure_month_partition({temp}, 'audit_entries', '2011-01-01')")
        assert "does not exist" in gone
        text = await _refused(writer, f"SELECT {control}.ensure_month_partition({temp}, 'audit_entries', '2011-01-01')")
        assert "is not a registered read-model schema" in text
    assert not await _pwned(isolated, schema)


async def test_a_schema_of_the_callers_own_and_a_retired_model_are_refused(isolated: Isolated) -> None:
    if isolated.stack.admin_dsn is None:
        pytest.skip("needs a superuser to let the reader create a schema")
    schema, control = isolated.name, isolated.query.control_schema
    own = f"{schema}_own"
    async with _as(isolated.stack.admin_dsn) as admin:
        database = await admin.fetchval("SELECT current_database()")
        await admin.execute(f"GRANT CREATE ON DATABASE {database} TO audit_query")
        try:
            async with _as(isolated.stack.query_dsn) as reader:
                await reader.execute(f"CREATE SCHEMA {own}")
                for sql in _attack(schema, control):
                    await reader.execute(sql.replace("pg_temp.", f"{own}.").replace("TEMP TABLE ", f"TABLE {own}."))
                await reader.execute(f"GRANT USAGE ON SCHEMA {own} TO PUBLIC")
                text = await _refused(reader, f"SELECT * FROM {control}.merkle_leaf_of($1, $2)", own, ANY_ID)
                assert "is not a registered read-model schema" in text
            # A model the owner retired (as a swap does) is no longer served either.
            await register_on(admin, control, schema, "retired")
            async with _as(isolated.stack.query_dsn) as reader:
                text = await _refused(reader, f"SELECT * FROM {control}.merkle_leaf_of($1, $2)", schema, ANY_ID)
                assert "is not a registered read-model schema" in text
            await register_on(admin, control, schema, "live")
        finally:
            await admin.execute(f"DROP SCHEMA IF EXISTS {own} CASCADE")
            await admin.execute(f"REVOKE CREATE ON DATABASE {database} FROM audit_query")
    assert not await _pwned(isolated, schema)


async def test_look_alikes_in_public_shadow_nothing_and_tenancy_holds(isolated: Isolated) -> None:
    if isolated.stack.admin_dsn is None:
        pytest.skip("needs a superuser to let the reader write to public")
    schema, control = isolated.name, isolated.query.control_schema
    ids = await _project(isolated, 3)
    async with _as(isolated.stack.admin_dsn) as admin:
        await admin.execute("GRANT CREATE ON SCHEMA public TO audit_query")
        try:
            async with _as(isolated.stack.query_dsn) as reader:
                suffix = uuid4().hex[:8]
                await reader.execute(
                    f"""CREATE FUNCTION public.evil_{suffix}(text, text) RETURNS boolean LANGUAGE plpgsql AS $$
                        BEGIN RAISE EXCEPTION 'a look-alike ran as %', current_user; END $$;
                        CREATE OPERATOR public.= (LEFTARG = text, RIGHTARG = text, FUNCTION = public.evil_{suffix});
                        CREATE FUNCTION public.string_to_array(text, text) RETURNS text[] LANGUAGE plpgsql AS $$
                        BEGIN RAISE EXCEPTION 'a look-alike ran as %', current_user; END $$;
                        CREATE FUNCTION public.current_setting(text, boolean) RETURNS text LANGUAGE sql
                        AS $$ SELECT '*' $$"""
                )
                await reader.execute("SET search_path = public, pg_catalog")
                try:
                    async with reader.transaction():
                        await reader.execute("SELECT pg_catalog.set_config('audit.tenants', 'globex', true)")
                        other = await reader.fetch(f"SELECT * FROM {control}.merkle_leaf_of($1, $2)", schema, ids[0])
                    async with reader.transaction():
                        await reader.execute("SELECT pg_catalog.set_config('audit.tenants', 'acme', true)")
                        mine = await reader.fetch(f"SELECT * FROM {control}.merkle_leaf_of($1, $2)", schema, ids[0])
                finally:
                    await reader.execute(
                        f"RESET search_path; DROP OPERATOR public.= (text, text); DROP FUNCTION public.evil_{suffix};"
                        " DROP FUNCTION public.string_to_array(text, text);"
                        " DROP FUNCTION public.current_setting(text, boolean)"
                    )
        finally:
            await admin.execute("REVOKE CREATE ON SCHEMA public FROM audit_query")
    assert other == []  # another tenant's leaf stays hidden: the look-alikes shadowed no built-in
    assert len(mine) == 1


async def test_every_security_definer_function_pins_its_path_and_checks_its_schema(isolated: Isolated) -> None:
    async with isolated.owner() as conn:
        rows = await conn.fetch(
            """SELECT n.nspname, p.proname, pg_get_function_identity_arguments(p.oid) AS args, p.proconfig, p.prosrc
                 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                WHERE p.prosecdef AND n.nspname NOT IN ('pg_catalog', 'information_schema')"""
        )
    assert rows, "the elevated functions exist (in the control schemas)"
    for r in rows:
        where = f"{r['nspname']}.{r['proname']}({r['args']})"
        assert r["proname"] in ELEVATED, f"{where} is SECURITY DEFINER but not on the allow-list"
        assert "search_path=pg_catalog, pg_temp" in (r["proconfig"] or []), f"{where} does not pin its search_path"
        assert r["args"].startswith("target_schema text"), f"{where} takes no schema argument to check"
        assert ".registered_read_model(target_schema)" in r["prosrc"], f"{where} does not check the registry"
        assert r["nspname"].endswith("control"), f"{where} is outside a control schema"


async def _project(isolated: Isolated, n: int) -> list[str]:
    async with projector_running(isolated.projector):
        ids = await publish_events(isolated.stack.bootstrap, isolated.projector.audit_topic, n)

        async def all_in() -> bool:
            async with isolated.owner() as conn:
                return bool(await conn.fetchval("SELECT count(*) FROM merkle_leaves") == n)

        await eventually(all_in, within=30)
    return ids


async def test_an_upgrade_from_the_previous_head_repairs_live_and_shadow_schemas(
    isolated: Isolated, audit: AuditProducer
) -> None:
    """Built at the previous head the attack works; after migrating, it is refused, in the live model and in a
    shadow, and the realistic mix projects and verifies."""
    live, shadow, control = f"{isolated.name}_old", f"{isolated.name}_oldshadow", f"{isolated.name}_oldcontrol"
    try:
        await _upgrade(isolated, audit, live, shadow, control)
    finally:
        async with isolated.owner() as conn:
            await conn.execute(f"DROP SCHEMA IF EXISTS {live}, {shadow}, {control} CASCADE")


async def _upgrade(isolated: Isolated, audit: AuditProducer, live: str, shadow: str, control: str) -> None:
    before = [m for m in bundled() if m.version <= "0017"]
    await migrate(isolated.stack.owner_dsn, control, [m for m in bundled("control") if m.version <= "0006"],
                  control_schema=None)  # fmt: skip
    for schema in (live, shadow):
        await migrate(isolated.stack.owner_dsn, schema, before, control_schema=None)
    async with _as(isolated.stack.query_dsn) as reader:
        for sql in _attack(live, control):
            await reader.execute(sql)
        await reader.fetch(f"SELECT * FROM {live}.merkle_leaf_of(pg_my_temp_schema()::regnamespace::text, $1)", ANY_ID)
    assert await _pwned(isolated, live), "the previous head was vulnerable (the test reproduces the attack)"
    async with isolated.owner() as conn:
        await conn.execute(f"DROP TABLE {live}.pwned")

    await migrate(isolated.stack.owner_dsn, live, control_schema=control)
    await migrate(isolated.stack.owner_dsn, shadow, control_schema=control, kind="shadow")
    async with _as(isolated.stack.query_dsn) as reader:
        for sql in _attack(live, control):
            await reader.execute(sql)
        for schema in (live, shadow):
            gone = await _refused(
                reader, f"SELECT * FROM {schema}.merkle_leaf_of(pg_my_temp_schema()::regnamespace::text, $1)", ANY_ID
            )
            assert "does not exist" in gone
        text = await _refused(
            reader, f"SELECT * FROM {control}.merkle_leaf_of(pg_my_temp_schema()::regnamespace::text, $1)", ANY_ID
        )
        assert "is not a registered read-model schema" in text
    assert not await _pwned(isolated, live)
    async with isolated.owner() as conn:
        rows = await conn.fetch(
            f"SELECT registered_name, kind FROM {control}.read_models WHERE registered_name = ANY($1::text[])",
            [live, shadow],
        )
    kinds = {r["registered_name"]: r["kind"] for r in rows}
    assert kinds == {live: "live", shadow: "shadow"}

    settings = isolated.projector.model_copy(update={"db_schema": live, "control_schema": control})
    async with projector_running(settings):
        history = await record_history(audit, isolated.stack.bootstrap)

        async def projected() -> bool:
            async with isolated.owner() as conn:
                n = await conn.fetchval(f"SELECT count(*) FROM {live}.audit_outcomes")
            return bool(n == len(history.audit_ids))

        await eventually(projected, within=60)
    conn = await asyncpg.connect(isolated.stack.owner_dsn, server_settings={"search_path": live})
    try:
        report = await verify_integrity(conn, control, [], "audit-trail")
    finally:
        await conn.close()
    assert report.findings == [], [str(f) for f in report.findings]
    assert report.leaves > 100


async def test_the_projector_role_cannot_aim_month_creation_at_its_own_schema_or_shadow_its_built_ins(
    isolated: Isolated,
) -> None:
    """ensure_month_partition, the projector role's elevated function: a schema of the caller's own (with a trigger
    on its default partition that would run as the owner) is refused; look-alikes of the built-ins it calls, put in
    `public` and first on the caller's search path, are never called."""
    if isolated.stack.admin_dsn is None:
        pytest.skip("needs a superuser to widen the projector role's rights for the test")
    schema, control = isolated.name, isolated.query.control_schema
    own, suffix = f"{schema}_w", uuid4().hex[:8]
    async with _as(isolated.stack.admin_dsn) as admin:
        database = await admin.fetchval("SELECT current_database()")
        await admin.execute(f"GRANT CREATE ON DATABASE {database} TO audit_projector")
        await admin.execute("GRANT CREATE ON SCHEMA public TO audit_projector")
        try:
            async with _as(str(isolated.projector.database_url)) as writer:
                await writer.execute(
                    f"""CREATE SCHEMA {own};
                        CREATE TABLE {own}.audit_entries (occurred_at timestamptz) PARTITION BY RANGE (occurred_at);
                        CREATE TABLE {own}.audit_entries_default PARTITION OF {own}.audit_entries DEFAULT;
                        CREATE FUNCTION {own}.as_owner() RETURNS trigger LANGUAGE plpgsql AS $$
                        BEGIN CREATE TABLE {schema}.pwned (n int); RETURN OLD; END $$;
                        CREATE TRIGGER t BEFORE DELETE ON {own}.audit_entries_default
                            FOR EACH ROW EXECUTE FUNCTION {own}.as_owner();
                        INSERT INTO {own}.audit_entries VALUES ('2011-01-05')"""
                )
                text = await _refused(
                    writer, f"SELECT {control}.ensure_month_partition($1, 'audit_entries', '2011-01-01')", own
                )
                assert "is not a registered read-model schema" in text
                await writer.execute(
                    f"""CREATE FUNCTION public.evil_{suffix}(text, text) RETURNS boolean LANGUAGE plpgsql AS $$
                        BEGIN RAISE EXCEPTION 'a look-alike ran as %', current_user; END $$;
                        CREATE OPERATOR public.= (LEFTARG = text, RIGHTARG = text, FUNCTION = public.evil_{suffix});
                        CREATE FUNCTION public.to_char(date, text) RETURNS text LANGUAGE plpgsql AS $$
                        BEGIN RAISE EXCEPTION 'a look-alike ran as %', current_user; END $$;
                        CREATE FUNCTION public.to_regclass(text) RETURNS regclass LANGUAGE plpgsql AS $$
                        BEGIN RAISE EXCEPTION 'a look-alike ran as %', current_user; END $$;
                        SET search_path = public, pg_catalog"""
                )
                try:
                    made = await writer.fetchval(
                        f"SELECT {control}.ensure_month_partition($1, 'execution_logs', '2012-05-09')", schema
                    )
                finally:
                    await writer.execute(
                        f"RESET search_path; DROP OPERATOR public.= (text, text); DROP FUNCTION public.evil_{suffix};"
                        " DROP FUNCTION public.to_char(date, text); DROP FUNCTION public.to_regclass(text)"
                    )
            assert made is True
        finally:
            await admin.execute(f"DROP SCHEMA IF EXISTS {own} CASCADE")
            await admin.execute("REVOKE CREATE ON SCHEMA public FROM audit_projector")
            await admin.execute(f"REVOKE CREATE ON DATABASE {database} FROM audit_projector")
    async with isolated.owner() as conn:
        assert await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"{schema}.execution_logs_y2012m05")
    assert not await _pwned(isolated, schema)
