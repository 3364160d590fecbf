"""Control records to per-rollout state, by the rules of control-command.v1.json.

The twin of router/table.go and router/assign.go: the same checks in the same
order, the same outcomes and the same assignment, checked by both against
schemas/testdata/router-vectors.json.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import hmac
import json
import re
import threading
import time
from typing import Any, Callable, Mapping, Optional

BUCKETS = 10000
MAX_IDS_PER_ROLLOUT = 1024

SET_WEIGHT, PROMOTE, ROLLBACK, HOLD = "set_weight", "promote", "rollback", "hold"
ACTIONS = (SET_WEIGHT, PROMOTE, ROLLBACK, HOLD)

# Reasons of Refused, as router.Reason in Go.
NOT_JSON = "not_json"
INVALID = "invalid"
KEY_MISMATCH = "key_mismatch"
UNSIGNED = "unsigned"
BAD_SIGNATURE = "bad_signature"
REASONS = (NOT_JSON, INVALID, KEY_MISMATCH, UNSIGNED, BAD_SIGNATURE)


class Ignored(Exception):
    """A record read but rightly not applied: Stale, Duplicate or Tombstone."""


class Stale(Ignored):
    """The command's seq is not above the last seq applied for its rollout."""


class Duplicate(Ignored):
    """A command with the same command_id was applied already."""


class Tombstone(Ignored):
    """The record has no value; canaryd writes none, so it is ignored."""


class Refused(Exception):
    """A record that is not a valid, authentic command."""

    def __init__(self, reason: str, rollout: str = "", detail: str = ""):
        self.reason, self.rollout, self.detail = reason, rollout, detail
        msg = "command refused: " + reason
        if rollout:
            msg += " (rollout " + rollout + ")"
        if detail:
            msg += ": " + detail
        super().__init__(msg)


@dataclasses.dataclass(frozen=True)
class Cohort:
    attribute: str
    values: tuple

    def contains(self, attrs: Optional[Mapping[str, str]]) -> bool:
        if not attrs or self.attribute not in attrs:
            return False
        return attrs[self.attribute] in self.values


def bucket(rollout: str, key: str) -> int:
    """The first 8 bytes of SHA-256(rollout NUL key), big-endian, mod 10000."""
    h = hashlib.sha256(rollout.encode("utf-8") + b"\x00" + key.encode("utf-8")).digest()
    return int.from_bytes(h[:8], "big") % BUCKETS


def is_canary(action: str, weight: int, cohort: Optional[Cohort], rollout: str, key: str,
              attrs: Optional[Mapping[str, str]]) -> bool:
    if action == PROMOTE:
        return True
    if action == ROLLBACK:
        return False
    if weight <= 0 or (cohort is not None and not cohort.contains(attrs)):
        return False
    return bucket(rollout, key) < weight * (BUCKETS // 100)


@dataclasses.dataclass(frozen=True)
class State:
    """What a rollout's routers must do: the effect of its last applied command."""

    rollout: str
    baseline: str
    canary: str
    action: str
    weight: int  # the canary's percent in force: 100 after promote, 0 after rollback
    cohort: Optional[Cohort]
    step: int
    seq: int
    command_id: str
    deployment_id: str
    commit: str
    decided_at: str  # as canaryd wrote it (RFC 3339)
    applied_at: float  # this router's clock (time.time()) when it applied the command

    def assign(self, key: str, attrs: Optional[Mapping[str, str]] = None) -> str:
        """The version (baseline or canary) of the request with this sticky key."""
        if is_canary(self.action, self.weight, self.cohort, self.rollout, key, attrs):
            return self.canary
        return self.baseline


@dataclasses.dataclass(frozen=True)
class Change:
    command: dict  # the decoded command
    prev: Optional[State]
    state: State
    replay: bool = False  # read while bootstrapping


@dataclasses.dataclass
class Stats:
    records: int = 0
    applied: int = 0
    stale: int = 0
    duplicate: int = 0
    tombstone: int = 0
    refused: dict = dataclasses.field(default_factory=lambda: {r: 0 for r in REASONS})


_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
_MAX_SEQ = 2**64 - 1


def _decode(value: bytes) -> dict:
    """Decodes a command the way Go's encoding/json fills schemas.Command:
    unknown members ignored, null as absent, a member of the wrong type an error.
    Member names must match exactly (encoding/json would also take "Seq" for
    "seq"; canaryd writes them in lower case, so no real command differs)."""
    try:
        obj = json.loads(value)
    except (ValueError, UnicodeDecodeError) as e:
        raise Refused(NOT_JSON, detail=str(e)) from None
    if obj is None:
        obj = {}
    if not isinstance(obj, dict):
        raise Refused(NOT_JSON, detail="not an object")

    def get(name, types, default):
        v = obj.get(name)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, types):
            raise Refused(NOT_JSON, detail=f"member {name}: wrong type")
        return v

    c = {
        "command_id": get("command_id", str, ""),
        "seq": get("seq", int, 0),
        "rollout": get("rollout", str, ""),
        "baseline": get("baseline", str, ""),
        "canary": get("canary", str, ""),
        "action": get("action", str, ""),
        "weight": get("weight", int, 0),
        "step": get("step", int, 0),
        "reason": get("reason", str, ""),
        "evidence": obj.get("evidence"),
        "decided_at": get("decided_at", str, ""),
        "deployment_id": get("deployment_id", str, ""),
        "commit": get("commit", str, ""),
        "signature": get("signature", str, ""),
        "cohort": None,
    }
    if not 0 <= c["seq"] <= _MAX_SEQ:
        raise Refused(NOT_JSON, detail="member seq: out of range")
    for name in ("weight", "step"):  # Go ints
        if not -(2**63) <= c[name] < 2**63:
            raise Refused(NOT_JSON, detail=f"member {name}: out of range")
    if c["decided_at"] and not _RFC3339.match(c["decided_at"]):
        raise Refused(NOT_JSON, detail="member decided_at: not an RFC 3339 time")
    co = obj.get("cohort")
    if co is not None:
        if not isinstance(co, dict):
            raise Refused(NOT_JSON, detail="member cohort: wrong type")
        attr = co.get("attribute")
        values = co.get("values")
        if attr is None:
            attr = ""
        if values is None:
            values = []
        if not isinstance(attr, str) or not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise Refused(NOT_JSON, detail="member cohort: wrong type")
        c["cohort"] = Cohort(attr, tuple(values))
    return c


def _validate(c: dict) -> Optional[str]:
    """schemas.Command.Validate: the first problem, or None."""
    if not c["command_id"]:
        return "missing command_id"
    if not c["rollout"]:
        return "missing rollout"
    if c["seq"] == 0:
        return "seq must be > 0"
    if not 0 <= c["weight"] <= 100:
        return f"weight {c['weight']} outside 0..100"
    co = c["cohort"]
    if co is not None and not co.attribute:
        return "cohort without attribute"
    if co is not None and not co.values:
        return f"cohort {co.attribute!r} without values"
    if c["action"] not in ACTIONS:
        return f"unknown action {c['action']!r}"
    return None


_PREFIX, _SUFFIX = b',"signature":"', b'"}'


def _verify(value: bytes, sig: str, key: bytes) -> Optional[str]:
    """None when value, as received, carries a valid signature sig under key;
    else UNSIGNED or BAD_SIGNATURE. The signed bytes are value with its final
    ,"signature":"<hex>" member removed: never a re-encoding."""
    if not sig:
        return UNSIGNED
    tail = _PREFIX + sig.encode("utf-8") + _SUFFIX
    if len(value) <= len(tail) or not value.endswith(tail):
        return BAD_SIGNATURE
    want = hmac.new(key, value[: len(value) - len(tail)] + b"}", hashlib.sha256).hexdigest()
    if not hmac.compare_digest(want.encode(), sig.encode("utf-8")):
        return BAD_SIGNATURE
    return None


def verify(value: bytes, key: bytes) -> Optional[str]:
    """Checks the signature of a control record's value as received: None when
    it verifies under key, else UNSIGNED or BAD_SIGNATURE (NOT_JSON when the
    value is not JSON)."""
    try:
        c = _decode(value)
    except Refused as e:
        return e.reason
    return _verify(value, c["signature"], key)


class _Entry:
    __slots__ = ("state", "ids")

    def __init__(self):
        self.state: Optional[State] = None
        self.ids: "collections.OrderedDict[str, None]" = collections.OrderedDict()


class Table:
    """Applies control records to per-rollout state. No I/O; thread-safe."""

    def __init__(self, signing_key: Optional[bytes] = None):
        self._key = bytes(signing_key) if signing_key else None
        self._lock = threading.Lock()
        self._rollouts: dict = {}
        self._stats = Stats()

    def apply(self, key: Optional[bytes], value: Optional[bytes], now: Optional[float] = None) -> Change:
        """Applies one record (key and value as received). Returns the Change;
        raises Stale, Duplicate or Tombstone when rightly ignored, Refused when
        the record is not a valid, authentic command."""
        if now is None:
            now = time.time()
        try:
            c = self._check(key, value)
        except Refused as e:
            with self._lock:
                self._stats.records += 1
                self._stats.refused[e.reason] += 1
            raise
        except Tombstone:
            with self._lock:
                self._stats.records += 1
                self._stats.tombstone += 1
            raise
        with self._lock:
            self._stats.records += 1
            e = self._rollouts.get(c["rollout"])
            if e is None:
                e = self._rollouts[c["rollout"]] = _Entry()
            if c["command_id"] in e.ids:
                self._stats.duplicate += 1
                raise Duplicate(c["command_id"])
            last = e.state.seq if e.state else 0
            if c["seq"] <= last:
                self._stats.stale += 1
                raise Stale(f"seq {c['seq']} <= {last}")
            weight = c["weight"]
            if c["action"] == PROMOTE:
                weight = 100
            elif c["action"] == ROLLBACK:
                weight = 0
            st = State(rollout=c["rollout"], baseline=c["baseline"], canary=c["canary"], action=c["action"],
                       weight=weight, cohort=c["cohort"], step=c["step"], seq=c["seq"], command_id=c["command_id"],
                       deployment_id=c["deployment_id"], commit=c["commit"], decided_at=c["decided_at"],
                       applied_at=now)
            ch = Change(command=c, prev=e.state, state=st)
            e.state = st
            e.ids[c["command_id"]] = None
            if len(e.ids) > MAX_IDS_PER_ROLLOUT:
                e.ids.popitem(last=False)
            self._stats.applied += 1
            return ch

    def _check(self, key: Optional[bytes], value: Optional[bytes]) -> dict:
        if value is None:
            raise Tombstone()
        c = _decode(value)
        problem = _validate(c)
        if problem:
            raise Refused(INVALID, c["rollout"], problem)
        if (key or b"") != c["rollout"].encode("utf-8"):
            raise Refused(KEY_MISMATCH, c["rollout"], f"record key {key!r}")
        if self._key is not None:
            reason = _verify(value, c["signature"], self._key)
            if reason:
                raise Refused(reason, c["rollout"])
        return c

    def state(self, rollout: str) -> Optional[State]:
        with self._lock:
            e = self._rollouts.get(rollout)
            return e.state if e else None

    def states(self) -> list:
        """Every rollout's state, sorted by rollout (by its UTF-8 bytes, as Go)."""
        with self._lock:
            out = [e.state for e in self._rollouts.values() if e.state is not None]
        return sorted(out, key=lambda s: s.rollout.encode("utf-8"))

    def assign(self, rollout: str, key: str, attrs: Optional[Mapping[str, str]] = None) -> str:
        """The version of the request, or "" when the rollout has no state."""
        st = self.state(rollout)
        return st.assign(key, attrs) if st else ""

    def stats(self) -> Stats:
        with self._lock:
            return dataclasses.replace(self._stats, refused=dict(self._stats.refused))


OnChange = Callable[[Change], Any]
