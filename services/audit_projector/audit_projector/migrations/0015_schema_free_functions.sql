-- merkle_leaf_of captured its search path by name when it was created, so in a rebuild renamed into place it
-- would have read the schema it was built in, which no longer exists under that name. It now takes the schema
-- explicitly (callers pass current_schema(), resolved at call time) and still runs with its owner's rights,
-- since readers see leaf data only through it: for an entry whose tenant they may see, in a read-model schema
-- they may use.
DROP FUNCTION merkle_leaf_of(uuid);

CREATE FUNCTION merkle_leaf_of(target_schema text, entry uuid)
RETURNS TABLE (topic text, partition integer, leaf_index bigint, kafka_offset bigint, leaf_data bytea)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF to_regprocedure(format('%I.merkle_leaf_of(text, uuid)', target_schema)) IS NULL
       OR NOT has_schema_privilege(session_user, target_schema, 'USAGE') THEN
        RAISE EXCEPTION 'merkle_leaf_of: % is not a read-model schema the caller may use', target_schema
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN QUERY EXECUTE format(
        'SELECT l.topic, l.partition, l.leaf_index, l.kafka_offset, l.leaf_data
           FROM %1$I.audit_entries e
           JOIN %1$I.merkle_leaves l
             ON l.topic = e.kafka_topic AND l.partition = e.kafka_partition AND l.kafka_offset = e.kafka_offset
          WHERE e.audit_id = $1 AND %1$I.tenant_visible(e.tenant_id)', target_schema)
        USING entry;
END;
$$;
REVOKE ALL ON FUNCTION merkle_leaf_of(text, uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION merkle_leaf_of(text, uuid) TO audit_reader;
