"""All of the query API's SQL, one module per concern: entries (the audit log, entity histories), statistics (the
rollup tiers), traces (an action and its log lines), entity_logs (an entity's lines), subjects (a data subject's
entries), operations, proofs and control (tokens, sessions)."""

from audit_query.repository.control import ControlRepository, TokenAdmin, TokenInfo
from audit_query.repository.entity_logs import EntityLogQueries
from audit_query.repository.entries import LOG_ORDER, EntryQueries, Row, check_sort_values
from audit_query.repository.operations import OperationsQueries
from audit_query.repository.proofs import ProofRepository
from audit_query.repository.statistics import StatsQueries
from audit_query.repository.subjects import SubjectQueries
from audit_query.repository.traces import TraceJson, TraceQueries, TraceRecord, check_log_key


class AuditRepository(EntryQueries, EntityLogQueries, StatsQueries, TraceQueries, OperationsQueries, SubjectQueries):
    """The read model as the API reads it, through the read pool."""


__all__ = [
    "LOG_ORDER",
    "AuditRepository",
    "ControlRepository",
    "ProofRepository",
    "Row",
    "TokenAdmin",
    "TokenInfo",
    "TraceJson",
    "TraceRecord",
    "check_log_key",
    "check_sort_values",
]
