// Package loadtest simulates a fleet of AI agents: a baseline and a canary
// version of one or more rollouts, writing agent events v1 — or OTLP traces,
// as the OpenTelemetry Collector's Kafka exporter does — the way a real fleet
// does, so canaryd can be demonstrated, tested and benchmarked without one.
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
// FormatJSON (the default): one record per event, key = rollout name, value =
// schemas.AppendEvent's JSON. Every event carries rollout, version, kind, name, ts, duration_ms,
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
//     none); requests (its llm and tool events), request_errors (those
//     failed) and request_median_ms (the median of their duration_ms: the
//     request count 2·steps+1 is odd, so it is the middle one); outcome
//     {success, score, hallucination}.
//     status is error, with the final LLM call's error_type, only when that
//     call failed and the agent produced no answer.
//   - canary events carry the rollout's deployment_id and commit, when set.
//
// FormatOTLPProto and FormatOTLPJSON: one record per finished session, an
// ExportTraceServiceRequest in protobuf or OTLP/JSON as the Collector's Kafka
// exporter writes a batch (default topic DefaultOTLPTopic, otlp_spans), key =
// the trace id in 32 hex digits, as the exporter's partition_traces_by_id
// sets it. The same seed gives the same sessions as in JSON; the record is
// written when the session ends, where the JSON format writes its agent event.
// It holds one resource — service.name = rollout, service.version and
// k8s.pod.label.app.kubernetes.io/version = version, k8s.namespace.name and
// the Python SDK's telemetry.sdk.* — and one scope with the session's spans in
// the order they ended, following the GenAI semantic conventions:
//   - chat spans (one per LLM call): name "chat <model>", kind client,
//     gen_ai.operation.name=chat, gen_ai.provider.name=openai,
//     gen_ai.request.model, gen_ai.conversation.id = session id,
//     server.address; on success gen_ai.response.model and
//     gen_ai.usage.input_tokens/output_tokens; on failure error.type and status
//     ERROR.
//   - execute_tool spans: name "execute_tool <tool>", kind internal,
//     gen_ai.tool.name, gen_ai.tool.type=function, gen_ai.tool.call.id,
//     gen_ai.conversation.id; error.type and status ERROR on failure.
//   - one invoke_agent span, the root and parent of the others, last: name
//     "invoke_agent <rollout>", from the session's start to the end of its
//     last request, gen_ai.agent.name = rollout, gen_ai.agent.version =
//     version, gen_ai.conversation.id, gen_ai.request.model, no usage and no
//     request totals (canaryd's stream.Sessions sums them from the chat and
//     execute_tool spans, to the JSON agent event's values). When the
//     session failed (outcome.success false in JSON) its status is ERROR with
//     error.type = the final LLM call's error type, or task_failed. Two
//     gen_ai.evaluation.result span events at its end:
//     gen_ai.evaluation.name=task_success with gen_ai.evaluation.score.value
//     (the outcome score) and gen_ai.evaluation.score.label pass or fail, and
//     hallucination with label hallucinated or grounded.
//
// Requests start when the previous one ends, as in JSON (ts − duration_ms).
// What JSON carries and the conventions do not: cost_usd, context_tokens and
// context_limit, deployment_id and commit. An agent span is in error whenever
// its session failed, where a JSON agent event has status error only when the
// final LLM call failed; both count the session as failed.
//
// # Counting
//
// A request is one llm or tool event: the unit canaryd counts for error rate
// and latency. Agent events are session summaries: they are not requests,
// and their status is not counted as an error. Counts (Fleet.Produced,
// Generator.Counts) follows these definitions, so a test can compare
// canaryd's totals with what was written. In the OTLP formats, the same
// holds of spans: requests are chat and execute_tool spans, sessions
// invoke_agent spans; a record counts when it is written, with all of its
// session's spans.
//
// # Commands
//
// Fleet follows the control topic with the router package, as a real router
// would: from the start, without a consumer group, applying a command when it
// is valid (schemas.Command.Validate), signed when FleetConfig.SigningKey is
// set (verified on the bytes as received), its seq is above the last applied
// for its rollout and its command_id has not been applied before; and then
// only when it is for one of the fleet's rollouts and for that rollout's
// baseline and canary when the command names versions (a command from an
// earlier rollout of other versions is ignored). set_weight sets the weight, promote sets 100
// (the baseline retires), rollback sets 0, hold keeps the weight. Weights
// apply to sessions that start afterwards.
package loadtest
