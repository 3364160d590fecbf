"""The shared vectors of schemas/testdata/router-vectors.json, which the Go
package router generates and checks too."""

import json
import pathlib

import pytest

import canaryd_router as cr

VECTORS = json.loads((pathlib.Path(__file__).resolve().parents[3] / "schemas" / "testdata" /
                      "router-vectors.json").read_text(encoding="utf-8"))


def _cohort(c):
    return None if c is None else cr.Cohort(c["attribute"], tuple(c["values"]))


def test_vectors_present():
    assert VECTORS["buckets"] == cr.BUCKETS
    assert len(VECTORS["assign"]) >= 200 and len(VECTORS["signatures"]) >= 10 and len(VECTORS["tables"]) == 2


@pytest.mark.parametrize("case", VECTORS["assign"], ids=lambda c: f"{c['rollout']}/{c['key'][:20]}/{c['action']}/{c['weight']}")
def test_assign(case):
    assert cr.bucket(case["rollout"], case["key"]) == case["bucket"]
    st = cr.State(rollout=case["rollout"], baseline=case["baseline"], canary=case["canary"], action=case["action"],
                  weight=case["weight"], cohort=_cohort(case["cohort"]), step=0, seq=1, command_id="x",
                  deployment_id="", commit="", decided_at="", applied_at=0.0)
    assert st.assign(case["key"], case["attrs"]) == case["want"]


@pytest.mark.parametrize("case", VECTORS["signatures"], ids=lambda c: c["name"])
def test_signature(case):
    got = cr.verify(case["value"].encode("utf-8"), case["key"].encode("utf-8"))
    assert got == (None if case["valid"] else case["reason"])


def _outcome(table, key, value):
    try:
        table.apply(key, value, 0.0)
    except cr.Stale:
        return "stale"
    except cr.Duplicate:
        return "duplicate"
    except cr.Tombstone:
        return "tombstone"
    except cr.Refused as e:
        return "refused:" + e.reason
    return "applied"


@pytest.mark.parametrize("case", VECTORS["tables"], ids=lambda c: c["name"])
def test_table(case):
    t = cr.Table(case["key"].encode() or None)
    got = []
    for r in case["records"]:
        value = None if r["value"] is None else r["value"].encode("utf-8")
        got.append(_outcome(t, r["key"].encode("utf-8"), value))
    assert got == [r["want"] for r in case["records"]]
    states = [{"rollout": s.rollout, "baseline": s.baseline, "canary": s.canary, "action": s.action,
               "weight": s.weight, "step": s.step, "seq": s.seq, "command_id": s.command_id,
               "cohort": None if s.cohort is None else {"attribute": s.cohort.attribute, "values": list(s.cohort.values)}}
              for s in t.states()]
    assert states == case["states"]
    st = t.stats()
    stats = {"records": st.records, "applied": st.applied, "stale": st.stale, "duplicate": st.duplicate,
             "tombstone": st.tombstone, **{"refused:" + r: n for r, n in st.refused.items()}}
    assert stats == case["stats"]


def test_monotone_and_cohort():
    # Exact for every key: the canary set only grows with the weight.
    internal = cr.Cohort("user_tier", ("internal",))
    for i in range(300):
        key = f"sess-{i}"
        flags = [cr.is_canary(cr.SET_WEIGHT, w, None, "r", key, None) for w in range(101)]
        first = flags.index(True)
        assert all(flags[first:]) and not any(flags[:first])
        assert first == cr.bucket("r", key) // 100 + 1
        assert not any(cr.is_canary(cr.SET_WEIGHT, w, internal, "r", key, {"user_tier": "external"}) for w in range(101))
        assert cr.is_canary(cr.PROMOTE, 0, internal, "r", key, None)
        assert not cr.is_canary(cr.ROLLBACK, 100, None, "r", key, None)


def test_decode_like_go():
    t = cr.Table()
    good = {"command_id": "a" * 32, "seq": 1, "rollout": "r", "baseline": "v1", "canary": "v2", "action": "set_weight",
            "weight": 5, "step": 0, "reason": "", "decided_at": "2026-12-03T16:00:00Z"}
    for name, patch, want in [
        ("float seq", {"seq": 1.0}, "refused:not_json"),
        ("negative seq", {"seq": -1}, "refused:not_json"),
        ("bool weight", {"weight": True}, "refused:not_json"),
        ("string weight", {"weight": "5"}, "refused:not_json"),
        ("bad time", {"decided_at": "yesterday"}, "refused:not_json"),
        ("null weight is absent", {"weight": None, "seq": 2}, "applied"),
        ("weight 101", {"weight": 101, "seq": 3}, "refused:invalid"),
        ("unknown action", {"action": "pause", "seq": 3}, "refused:invalid"),
        ("cohort without values", {"cohort": {"attribute": "t", "values": []}, "seq": 3}, "refused:invalid"),
        ("unknown member", {"future": [1, 2], "seq": 4, "command_id": "b" * 32}, "applied"),
    ]:
        rec = dict(good, **patch)
        assert _outcome(t, b"r", json.dumps(rec).encode()) == want, name
