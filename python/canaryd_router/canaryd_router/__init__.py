"""Subscriber of canaryd's control topic for Python routers.

The twin of canaryd's Go package router: the same rules (signature checked
on the record as received, seq only increasing, command_id duplicates
dropped), the same per-rollout state and the same sticky assignment, checked
against the shared vectors in schemas/testdata/router-vectors.json.
"""

from .table import (ACTIONS, BAD_SIGNATURE, BUCKETS, HOLD, INVALID, KEY_MISMATCH, MAX_IDS_PER_ROLLOUT, NOT_JSON,
                    PROMOTE, REASONS, ROLLBACK, SET_WEIGHT, UNSIGNED, Change, Cohort, Duplicate, Ignored, Refused,
                    Stale, State, Stats, Table, Tombstone, bucket, is_canary, verify)

__all__ = [
    "ACTIONS", "BAD_SIGNATURE", "BUCKETS", "HOLD", "INVALID", "KEY_MISMATCH", "MAX_IDS_PER_ROLLOUT", "NOT_JSON",
    "PROMOTE", "REASONS", "ROLLBACK", "SET_WEIGHT", "UNSIGNED", "Change", "Cohort", "Duplicate", "Ignored",
    "Refused", "Stale", "State", "Stats", "Subscriber", "Table", "Tombstone", "bucket", "is_canary", "verify",
]


def __getattr__(name):
    # The Kafka client is imported only when the Subscriber is used, so the
    # rules and the assignment work without confluent-kafka installed.
    if name == "Subscriber":
        from .subscriber import Subscriber
        return Subscriber
    raise AttributeError(name)
