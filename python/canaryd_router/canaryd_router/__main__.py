"""python -m canaryd_router: what a router would see on the control topic.

Bootstraps from the topic, prints "ready" on a line of its own, follows the
topic until it has read --records records (0: none more), then prints one
JSON object: the states, the stats, the applied changes and, for the requests
of --assign (a JSON list of {"rollout", "key", "attrs"}), the version each
goes to. The signing key is read from the environment variable that
--signing-key-env names, so it stays off the command line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from .subscriber import DEFAULT_TOPIC, Subscriber


def _state(s):
    return {
        "rollout": s.rollout, "baseline": s.baseline, "canary": s.canary, "action": s.action, "weight": s.weight,
        "cohort": None if s.cohort is None else {"attribute": s.cohort.attribute, "values": list(s.cohort.values)},
        "step": s.step, "seq": s.seq, "command_id": s.command_id, "deployment_id": s.deployment_id,
        "commit": s.commit, "decided_at": s.decided_at,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m canaryd_router", description=__doc__.splitlines()[0])
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--topic", default=DEFAULT_TOPIC)
    ap.add_argument("--signing-key-env", default="", help="environment variable holding the HMAC key")
    ap.add_argument("--records", type=int, default=0, help="follow until this many records were read in all")
    ap.add_argument("--assign", default="", help="JSON file: a list of {rollout, key, attrs}")
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--router-id", default="", help="acknowledge applied commands under this router id")
    ap.add_argument("--acks-topic", default="", help="topic of the acks (default canary.acks)")
    args = ap.parse_args(argv)

    key = os.environ.get(args.signing_key_env, "").encode() if args.signing_key_env else None
    changes = []
    sub = Subscriber(args.brokers, args.topic, signing_key=key or None,
                     on_change=lambda c: changes.append({"rollout": c.state.rollout, "seq": c.state.seq,
                                                         "replay": c.replay}),
                     router_id=args.router_id or None, acks_topic=args.acks_topic)
    sub.start(args.timeout)  # the way a router runs it: a thread that bootstraps, then follows
    try:
        deadline = time.monotonic() + args.timeout
        while not sub.ready.wait(0.1):
            if sub.error is not None or time.monotonic() > deadline:
                print(f"bootstrap failed: {sub.error or 'timeout'}", file=sys.stderr)
                return 1
        print("ready", flush=True)
        while sub.stats().records < args.records:
            if sub.error is not None or time.monotonic() > deadline:
                print(f"read {sub.stats().records} records; want {args.records}: {sub.error or 'timeout'}",
                      file=sys.stderr)
                return 1
            time.sleep(0.02)
        sub.stop()  # joins the thread: every on_change has returned; flushes the acks
        out = {"states": [_state(s) for s in sub.states()], "changes": changes}
        if args.router_id:
            out["acks"] = sub.ack_stats()
        st = sub.stats()
        out["stats"] = {"records": st.records, "applied": st.applied, "stale": st.stale, "duplicate": st.duplicate,
                        "tombstone": st.tombstone, **{"refused:" + r: n for r, n in st.refused.items()}}
        if args.assign:
            with open(args.assign, encoding="utf-8") as f:
                reqs = json.load(f)
            out["assign"] = [sub.assign(r["rollout"], r["key"], r.get("attrs")) for r in reqs]
        json.dump(out, sys.stdout, ensure_ascii=False)
        print()
    finally:
        sub.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
