// Package loadtest simulates a fleet of AI agents: a baseline and a canary
// version of one or more rollouts, writing agent events v1 the way a real
// fleet does, so canaryd can be demonstrated, tested and benchmarked without
// one.
//
// Fleet writes the events to Kafka at the configured rates and follows the
// control commands canaryd writes back (set_weight, promote, rollback, hold),
// which closes the loop through Kafka. Generator produces the same events in
// memory, deterministically, for benchmarks and tests.
//
// # What is simulated
//
// Each Rollout starts sessions as a Poisson process at Rate per second of
// event time. A session picks the canary with probability weight/100 when it
// starts, and keeps its version to the end. It is an agent loop (see Profile):
// LLM call, tool call, …, final LLM call, one request after another, each with
// a lognormal latency and an independent chance of failing with a weighted
// error type, then one agent event summarising the session. Latencies, error
// rates and token counts come from the version's Profile.
//
// Events come out in event-time order across all in-flight sessions. An
// event's ts is the moment its request ended (for the agent event, the end of
// the session's last request), in unix nanoseconds, on the fleet's clock;
// duration_ms is the request's latency, so the span began at ts-duration.
//
// # What is written
//
// One record per event, key = rollout name, value = schemas.AppendEvent's
// JSON. Every event carries rollout, version, kind, name, ts, duration_ms,
// status, trace_id (32 hex), span_id (16 hex) and session_id, the same for all
// events of a session.
//   - llm events: name = model; parent_span_id = the session's span; on
//     success input_tokens, output_tokens, cost_usd and context_tokens (=
//     input_tokens); context_limit when the profile has one. A failed call
//     carries error_type and no tokens or cost.
//   - tool events: name = tool; parent_span_id = the session's span;
//     error_type when failed.
//   - agent events: name = rollout name; span_id = the session's span, the
//     parent of its requests; duration_ms from the session's start to its
//     end; summed tokens and cost; tool_calls (the tools called, in order,
//     failed calls included; absent when a profile with MinSteps 0 called
//     none); outcome {success, score, hallucination}.
//     status is error, with the final LLM call's error_type, only when that
//     call failed and the agent produced no answer.
//   - canary events carry the rollout's deployment_id and commit, when set.
//
// # Counting
//
// A request is one llm or tool event: the unit canaryd counts for error rate
// and latency. Agent events are session summaries: they are not requests,
// and their status is not counted as an error. Counts (Fleet.Produced,
// Generator.Counts) follows these definitions, so a test can compare
// canaryd's totals with what was written.
//
// # Commands
//
// Fleet reads the control topic from the start, without a consumer group,
// and applies a command when it is valid (schemas.Command.Validate), signed
// when FleetConfig.SigningKey is set, for one of its rollouts, for that
// rollout's baseline and canary when the command names versions (a command
// from an earlier rollout of other versions is ignored), and its command_id
// has not been applied before. set_weight sets the weight, promote sets 100
// (the baseline retires), rollback sets 0, hold keeps the weight. Weights
// apply to sessions that start afterwards.
package loadtest
