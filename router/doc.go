// Package router is the subscriber side of canaryd's control topic: what a
// router, gateway or traffic controller links in to obey canaryd's
// set_weight, promote, rollback and hold commands.
//
// It depends on franz-go and canaryd's schemas package (standard library
// only). python/canaryd_router is its Python twin; both are checked against
// the shared vectors of schemas/testdata/router-vectors.json.
//
// # Following the topic
//
// A Subscriber reads the control topic (canary.control) from the start,
// without a consumer group: to the end offsets the topic had when Run began
// (on the compacted topic that is the latest command of each rollout; Ready
// is then closed), and then every new command. Each record goes through a
// Table, which applies the rules of schemas/control-command.v1.json:
//
//   - the value must be a valid command (schemas.Command.Validate) whose
//     rollout equals the record key;
//   - with a signing key, the command must carry a signature that verifies on
//     the bytes as received with the final ,"signature":"…" member removed
//     (Verify), never on a re-encoding; unsigned or badly signed commands are
//     refused;
//   - a command whose command_id was applied before for the rollout is
//     dropped (ErrDuplicate; the last MaxIDsPerRollout ids are kept);
//   - a command whose seq is not above the last applied seq of its rollout is
//     ignored (ErrStale), so out-of-order and replayed commands are harmless.
//
// Every command carries the whole state of its rollout (versions, weight,
// cohort), so the state is a function of the last applied command alone: a
// router that bootstrapped from a compacted topic and one that followed every
// command agree. OnChange is called with each applied command (Change.Replay
// tells the bootstrap's apart); OnRefused and Stats see the others.
//
// # Sticky assignment
//
// Assign(rollout, key, attrs) returns the version a request goes to. key is
// what must stick to one version: the session id for an agent's
// conversation, or the user id. Its bucket is
//
//	Bucket(rollout, key) = uint64_be(SHA-256(rollout || 0x00 || key)[0:8]) mod 10000
//
// and the request goes to the canary when the bucket is below weight×100.
// So at weight w exactly the buckets [0, 100w) are on the canary: raising
// the weight only adds keys (a session on the canary at 5% stays there at
// 25%), and lowering it only removes them. promote sends everyone to the
// canary, rollback everyone to the baseline. A rollout without state gives
// "": route as you would without canaryd.
//
// # Cohorts
//
// A command may restrict its step to a cohort,
//
//	"cohort": {"attribute": "user_tier", "values": ["internal"]}
//
// Then only requests whose attribute user_tier is "internal" are eligible
// for the canary, and the weight is the canary's share of them (weight 100
// with that cohort: every internal user on the canary, nobody else). The
// router passes the request's attributes in attrs, under the names the
// rollout spec uses; it decides where they come from: a header set by the
// gateway (X-User-Tier), a claim of the caller's token, the tenant of the
// API key. A request that lacks the attribute is not in the cohort. For
// example, in an HTTP router:
//
//	attrs := map[string]string{"user_tier": r.Header.Get("X-User-Tier")}
//	version := sub.Assign("support-agent", sessionID, attrs)
//	if version == "" {
//		version = defaultVersion
//	}
//
// Pass the same attributes in the agent events' attrs, so the evidence can be
// read per cohort.
//
// # Use
//
//	sub, err := router.New(router.Brokers("kafka:9092"), router.SigningKey(key),
//		router.OnChange(func(c router.Change) { log.Print(c.State.Rollout, c.State.Weight) }))
//	if err != nil { ... }
//	defer sub.Close()
//	go sub.Run(ctx) // owned by the caller: cancel ctx, then Close
//	<-sub.Ready()
//	version := sub.Assign("support-agent", sessionID, attrs)
//
// # Acknowledgements
//
// With Acks(topic, routerID), the Subscriber publishes a schemas.Ack
// (schemas/ack.v1.json; key = rollout) for every command it applied: after
// OnChange, and when an Apply function is set, only if it returned nil
// (Apply is where an adapter puts the command in force and says whether it
// could). Acks are produced asynchronously and retried by franz-go; Close
// flushes them (AckFlushTimeout), AckStats counts them. canaryd
// (--acks-topic) shows per rollout which router is at which weight since
// when, and flags a router that has not acknowledged the latest command
// within its --ack-timeout.
//
// # Stats
//
// Stats counts the records read, those applied, stale, duplicate and
// tombstones, and the refused ones by Reason (not_json, invalid,
// key_mismatch, unsigned, bad_signature). Export them as the router's own
// metrics; the package registers none.
package router
