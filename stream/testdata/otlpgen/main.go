// Command otlpgen writes the protobuf and generated payloads in
// ../otlp with the OpenTelemetry Collector's own pdata marshalers, so that
// canaryd's hand-written OTLP decoders are tested against what the Collector
// really writes. It is a separate module (this folder has its own go.mod) so
// that canaryd itself does not depend on pdata's dependencies. Run it from
// this folder: go run .
//
// It writes:
//   - <fixture>.pb for each OTLP/JSON fixture <fixture>.json: the same
//     ExportTraceServiceRequest in protobuf (ptrace.ProtoMarshaler);
//   - bench-genai-50.otlp.{json,pb}: 10 agent turns of 5 GenAI spans each
//     (invoke_agent, 2 chat, 2 execute_tool) under one Kubernetes resource;
//   - multi-resource.otlp.{json,pb}: 3 resources × 2 scopes × 3 spans, the
//     scope lists of one resource written before its resource in the JSON;
//   - eval-span-event.otlp.{json,pb}: a chat span carrying two
//     gen_ai.evaluation.result span events;
//   - eval-logs.otlp.{json,pb}: evaluation results as log events, and log
//     records that are not;
//   - python-sdk-agent.otlp.{json,pb}: one agent turn as the OpenTelemetry
//     Python SDK exports it (resource service.name/service.version from
//     OTEL_SERVICE_NAME/OTEL_RESOURCE_ATTRIBUTES, spans grouped by
//     instrumentation scope, in end order), the agent named otherwise on
//     its invoke_agent span.
package main

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

const dir = "../otlp"

func main() {
	fixtures, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		log.Fatal(err)
	}
	for _, f := range fixtures {
		if strings.HasPrefix(filepath.Base(f), "bench-") || strings.HasPrefix(filepath.Base(f), "multi-") ||
			strings.HasPrefix(filepath.Base(f), "eval-") || strings.HasPrefix(filepath.Base(f), "python-sdk-") {
			continue // generated below
		}
		b, err := os.ReadFile(f)
		if err != nil {
			log.Fatal(err)
		}
		td, err := (&ptrace.JSONUnmarshaler{}).UnmarshalTraces(b)
		if err != nil {
			log.Fatalf("%s: %v", f, err)
		}
		writeTraces(strings.TrimSuffix(f, ".json"), td, false)
	}
	writeTraces(filepath.Join(dir, "bench-genai-50.otlp"), bench(), true)
	writeTraces(filepath.Join(dir, "multi-resource.otlp"), multi(), true)
	writeTraces(filepath.Join(dir, "eval-span-event.otlp"), evalSpanEvent(), true)
	writeLogs(filepath.Join(dir, "eval-logs.otlp"), evalLogs())
	writeTraces(filepath.Join(dir, "python-sdk-agent.otlp"), pythonSDKAgent(), true)
}

func writeTraces(base string, td ptrace.Traces, withJSON bool) {
	pb, err := (&ptrace.ProtoMarshaler{}).MarshalTraces(td)
	if err != nil {
		log.Fatal(err)
	}
	if _, err := (&ptrace.ProtoUnmarshaler{}).UnmarshalTraces(pb); err != nil {
		log.Fatalf("%s: re-read: %v", base, err)
	}
	write(base+".pb", pb)
	if withJSON {
		js, err := (&ptrace.JSONMarshaler{}).MarshalTraces(td)
		if err != nil {
			log.Fatal(err)
		}
		if strings.HasPrefix(filepath.Base(base), "multi-") {
			js = scopesFirst(js)
		}
		if _, err := (&ptrace.JSONUnmarshaler{}).UnmarshalTraces(js); err != nil {
			log.Fatalf("%s: re-read: %v", base, err)
		}
		write(base+".json", indent(js))
	}
}

func writeLogs(base string, ld plog.Logs) {
	pb, err := (&plog.ProtoMarshaler{}).MarshalLogs(ld)
	if err != nil {
		log.Fatal(err)
	}
	write(base+".pb", pb)
	js, err := (&plog.JSONMarshaler{}).MarshalLogs(ld)
	if err != nil {
		log.Fatal(err)
	}
	write(base+".json", indent(js))
}

func write(name string, b []byte) {
	if err := os.WriteFile(name, b, 0o644); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s\t%d bytes\n", name, len(b))
}

func indent(b []byte) []byte {
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		log.Fatal(err)
	}
	out.WriteByte('\n')
	return out.Bytes()
}

// scopesFirst moves the "resource" member of the second resourceSpans after
// its "scopeSpans", which OTLP/JSON allows (members are unordered).
func scopesFirst(js []byte) []byte {
	var doc struct {
		ResourceSpans []map[string]json.RawMessage `json:"resourceSpans"`
	}
	if err := json.Unmarshal(js, &doc); err != nil {
		log.Fatal(err)
	}
	var out bytes.Buffer
	out.WriteString(`{"resourceSpans":[`)
	for i, rs := range doc.ResourceSpans {
		if i > 0 {
			out.WriteByte(',')
		}
		order := []string{"resource", "scopeSpans", "schemaUrl"}
		if i == 1 {
			order = []string{"scopeSpans", "schemaUrl", "resource"}
		}
		out.WriteByte('{')
		n := 0
		for _, k := range order {
			v, ok := rs[k]
			if !ok {
				continue
			}
			if n > 0 {
				out.WriteByte(',')
			}
			fmt.Fprintf(&out, "%q:%s", k, v)
			n++
		}
		out.WriteByte('}')
	}
	out.WriteString(`]}`)
	return out.Bytes()
}

func tid(s string) pcommon.TraceID {
	var t pcommon.TraceID
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 16 {
		log.Fatalf("trace id %q", s)
	}
	copy(t[:], b)
	return t
}

func sid(s string) pcommon.SpanID {
	var t pcommon.SpanID
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 8 {
		log.Fatalf("span id %q", s)
	}
	copy(t[:], b)
	return t
}

// k8sResource fills a resource as the Collector's k8sattributes processor
// leaves it on an agent pod.
func k8sResource(r pcommon.Resource, service, version, role string) {
	a := r.Attributes()
	a.PutStr("service.name", service)
	if version != "" {
		a.PutStr("service.version", version)
	}
	a.PutStr("service.instance.id", "agents."+service+"-7c9d5b7f6d-x2x7q")
	a.PutStr("deployment.environment.name", "production")
	a.PutStr("k8s.namespace.name", "agents")
	a.PutStr("k8s.deployment.name", service)
	a.PutStr("k8s.pod.name", service+"-7c9d5b7f6d-x2x7q")
	a.PutStr("k8s.pod.label.rollouts-pod-template-hash", "7c9d5b7f6d")
	a.PutStr("k8s.pod.label.role", role)
	a.PutStr("telemetry.sdk.language", "python")
	a.PutStr("telemetry.sdk.name", "opentelemetry")
	a.PutStr("telemetry.sdk.version", "1.38.0")
}

const t0 = 1_764_095_652_000_000_000 // 2025-11-25T18:34:12Z

// bench is 10 agent turns of 5 spans: invoke_agent (parent), two chat
// calls and two tool calls, attributes as the GenAI conventions' OpenAI and
// agent instrumentations write them. Turn 7's second tool call fails.
func bench() ptrace.Traces {
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	k8sResource(rs.Resource(), "support-agent", "1.5.0", "canary")
	ss := rs.ScopeSpans().AppendEmpty()
	ss.Scope().SetName("opentelemetry.instrumentation.openai_v2")
	ss.Scope().SetVersion("2.1b0")
	for turn := range 10 {
		trace := tid(fmt.Sprintf("4bf92f3577b34da6a3ce929d0e0e47%02x", turn))
		start := pcommon.Timestamp(t0 + int64(turn)*1_000_000_000)
		root := sid(fmt.Sprintf("00f067aa0ba902%02x", turn))
		conv := fmt.Sprintf("conv_5j66UpCpwteGg4YSxUnt%02d", turn)

		agent := ss.Spans().AppendEmpty()
		agent.SetTraceID(trace)
		agent.SetSpanID(root)
		agent.SetName("invoke_agent support_assistant")
		agent.SetKind(ptrace.SpanKindInternal)
		agent.SetStartTimestamp(start)
		agent.SetEndTimestamp(start + 4_200_000_000)
		a := agent.Attributes()
		a.PutStr("gen_ai.operation.name", "invoke_agent")
		a.PutStr("gen_ai.provider.name", "openai")
		a.PutStr("gen_ai.agent.id", "asst_5j66UpCpwteGg4YSxUnt7lPY")
		a.PutStr("gen_ai.agent.name", "support_assistant")
		a.PutStr("gen_ai.agent.version", "1.5.0")
		a.PutStr("gen_ai.request.model", "gpt-4o-mini")
		a.PutStr("gen_ai.conversation.id", conv)
		a.PutInt("gen_ai.usage.input_tokens", 3610)
		a.PutInt("gen_ai.usage.output_tokens", 402)
		agent.Status().SetCode(ptrace.StatusCodeOk)

		for call := range 4 {
			sp := ss.Spans().AppendEmpty()
			sp.SetTraceID(trace)
			sp.SetSpanID(sid(fmt.Sprintf("b7ad6b71692033%x%x", turn, call)))
			sp.SetParentSpanID(root)
			s := start + pcommon.Timestamp(100_000_000+int64(call)*1_000_000_000)
			sp.SetStartTimestamp(s)
			a := sp.Attributes()
			if call%2 == 0 {
				sp.SetName("chat gpt-4o-mini")
				sp.SetKind(ptrace.SpanKindClient)
				sp.SetEndTimestamp(s + 812_500_000)
				a.PutStr("gen_ai.provider.name", "openai")
				a.PutStr("gen_ai.operation.name", "chat")
				a.PutStr("gen_ai.request.model", "gpt-4o-mini")
				a.PutInt("gen_ai.request.max_tokens", 1024)
				a.PutDouble("gen_ai.request.temperature", 0.2)
				a.PutStr("gen_ai.response.id", fmt.Sprintf("chatcmpl-9J3uIL87gldCFtiIbyaOvTeYBR%02d%d", turn, call))
				a.PutStr("gen_ai.response.model", "gpt-4o-mini-2024-07-18")
				a.PutInt("gen_ai.usage.input_tokens", 1805)
				a.PutInt("gen_ai.usage.output_tokens", 201)
				a.PutStr("gen_ai.conversation.id", conv)
				fr := a.PutEmptySlice("gen_ai.response.finish_reasons")
				fr.AppendEmpty().SetStr("tool_calls")
				a.PutStr("server.address", "api.openai.com")
				a.PutInt("server.port", 443)
			} else {
				sp.SetName("execute_tool search_orders")
				sp.SetKind(ptrace.SpanKindInternal)
				sp.SetEndTimestamp(s + 48_200_000)
				a.PutStr("gen_ai.operation.name", "execute_tool")
				a.PutStr("gen_ai.tool.name", "search_orders")
				a.PutStr("gen_ai.tool.call.id", fmt.Sprintf("call_VSPygqKTWdrhaFErNvMV%02d%d", turn, call))
				a.PutStr("gen_ai.tool.type", "function")
				a.PutStr("gen_ai.conversation.id", conv)
				if turn == 7 && call == 3 {
					a.PutStr("error.type", "timeout")
					sp.Status().SetCode(ptrace.StatusCodeError)
					sp.Status().SetMessage("orders API timed out")
					ev := sp.Events().AppendEmpty()
					ev.SetName("exception")
					ev.SetTimestamp(s + 48_200_000)
					ev.Attributes().PutStr("exception.type", "TimeoutError")
					ev.Attributes().PutStr("exception.message", "orders API timed out")
				}
			}
		}
	}
	return td
}

// multi is 3 resources (versions 1.4.0, 1.5.0 and none), each with 2 scopes
// of 3 spans: a chat span, a tool span and a plain HTTP server span.
func multi() ptrace.Traces {
	td := ptrace.NewTraces()
	for r, v := range []string{"1.4.0", "1.5.0", ""} {
		rs := td.ResourceSpans().AppendEmpty()
		k8sResource(rs.Resource(), "weather-agent", v, []string{"stable", "canary", "canary"}[r])
		for sc := range 2 {
			ss := rs.ScopeSpans().AppendEmpty()
			ss.Scope().SetName(fmt.Sprintf("scope-%d", sc))
			for i := range 3 {
				sp := ss.Spans().AppendEmpty()
				sp.SetTraceID(tid(fmt.Sprintf("5b8efff798038103d269b633813fc6%d%d", r, sc)))
				sp.SetSpanID(sid(fmt.Sprintf("a1b2c3d4e5f6%d%d%d%d", r, sc, i, 0)))
				s := pcommon.Timestamp(t0 + int64(r*100+sc*10+i)*1_000_000)
				sp.SetStartTimestamp(s)
				sp.SetEndTimestamp(s + pcommon.Timestamp((i+1)*10_000_000))
				a := sp.Attributes()
				switch i {
				case 0:
					sp.SetName("chat gpt-4")
					a.PutStr("gen_ai.operation.name", "chat")
					a.PutStr("gen_ai.request.model", "gpt-4")
					a.PutInt("gen_ai.usage.input_tokens", int64(100+r))
					a.PutInt("gen_ai.usage.output_tokens", int64(10+sc))
				case 1:
					sp.SetName("execute_tool get_weather")
					a.PutStr("gen_ai.operation.name", "execute_tool")
					a.PutStr("gen_ai.tool.name", "get_weather")
				case 2:
					sp.SetName("GET /forecast")
					sp.SetKind(ptrace.SpanKindServer)
					a.PutStr("http.request.method", "GET")
					a.PutInt("http.response.status_code", 200)
				}
			}
		}
	}
	return td
}

// evalSpanEvent is a chat span with two gen_ai.evaluation.result events.
func evalSpanEvent() ptrace.Traces {
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	k8sResource(rs.Resource(), "weather-agent", "1.5.0-rc.1", "canary")
	sp := rs.ScopeSpans().AppendEmpty().Spans().AppendEmpty()
	sp.SetTraceID(tid("4bf92f3577b34da6a3ce929d0e0e4736"))
	sp.SetSpanID(sid("00f067aa0ba902b7"))
	sp.SetName("chat gpt-4")
	sp.SetStartTimestamp(t0)
	sp.SetEndTimestamp(t0 + 1_234_000_000)
	sp.Attributes().PutStr("gen_ai.operation.name", "chat")
	sp.Attributes().PutStr("gen_ai.request.model", "gpt-4")
	e := sp.Events().AppendEmpty()
	e.SetName("gen_ai.evaluation.result")
	e.SetTimestamp(t0 + 2_000_000_000)
	e.Attributes().PutStr("gen_ai.evaluation.name", "relevance")
	e.Attributes().PutDouble("gen_ai.evaluation.score.value", 0.75)
	e.Attributes().PutStr("gen_ai.evaluation.score.label", "pass")
	e = sp.Events().AppendEmpty()
	e.SetName("gen_ai.evaluation.result")
	e.Attributes().PutStr("gen_ai.evaluation.name", "hallucination")
	e.Attributes().PutStr("gen_ai.evaluation.score.label", "hallucinated")
	return td
}

// evalLogs is five log records of one resource: an evaluation result as an
// event (event_name), one in the older event.name attribute form, a plain
// log line (ignored), a score outside 0..1 (skipped) and an evaluation that
// failed to run (error.type, no score, no time but an observed time).
func evalLogs() plog.Logs {
	ld := plog.NewLogs()
	rl := ld.ResourceLogs().AppendEmpty()
	k8sResource(rl.Resource(), "weather-agent", "1.5.0-rc.1", "canary")
	sl := rl.ScopeLogs().AppendEmpty()
	sl.Scope().SetName("my.evals")

	lr := sl.LogRecords().AppendEmpty()
	lr.SetEventName("gen_ai.evaluation.result")
	lr.SetTimestamp(t0)
	lr.SetObservedTimestamp(t0 + 5_000_000)
	lr.SetTraceID(tid("4bf92f3577b34da6a3ce929d0e0e4736"))
	lr.SetSpanID(sid("00f067aa0ba902b7"))
	lr.Attributes().PutStr("gen_ai.evaluation.name", "relevance")
	lr.Attributes().PutDouble("gen_ai.evaluation.score.value", 0.83)
	lr.Attributes().PutStr("gen_ai.evaluation.score.label", "relevant")

	lr = sl.LogRecords().AppendEmpty()
	lr.SetTimestamp(t0 + 1_000_000_000)
	lr.SetTraceID(tid("5b8efff798038103d269b633813fc60c"))
	lr.SetSpanID(sid("a1b2c3d4e5f60718"))
	lr.Attributes().PutStr("event.name", "gen_ai.evaluation.result")
	lr.Attributes().PutStr("gen_ai.evaluation.name", "hallucination")
	lr.Attributes().PutInt("gen_ai.evaluation.score.value", 0)
	lr.Attributes().PutStr("gen_ai.evaluation.score.label", "factual")
	lr.Attributes().PutStr("gen_ai.agent.name", "weather_assistant")

	lr = sl.LogRecords().AppendEmpty()
	lr.SetTimestamp(t0 + 2_000_000_000)
	lr.SetSeverityNumber(plog.SeverityNumberInfo)
	lr.SetSeverityText("INFO")
	lr.Body().SetStr("tool get_weather returned 200")

	lr = sl.LogRecords().AppendEmpty()
	lr.SetEventName("gen_ai.evaluation.result")
	lr.SetTimestamp(t0 + 3_000_000_000)
	lr.Attributes().PutStr("gen_ai.evaluation.name", "helpfulness")
	lr.Attributes().PutDouble("gen_ai.evaluation.score.value", 4)

	lr = sl.LogRecords().AppendEmpty()
	lr.SetEventName("gen_ai.evaluation.result")
	lr.SetObservedTimestamp(t0 + 4_000_000_000)
	lr.Attributes().PutStr("gen_ai.evaluation.name", "relevance")
	lr.Attributes().PutStr("error.type", "timeout")
	return ld
}

// pythonSDKAgent is one turn of an agent instrumented with the OpenTelemetry
// Python SDK and the GenAI instrumentations, as its OTLP exporter writes it
// (the Collector passes the grouping on): one resource made by the SDK from
// OTEL_SERVICE_NAME=support-agent and
// OTEL_RESOURCE_ATTRIBUTES=service.version=v1.5.0,deployment.environment.name=production;
// spans grouped by instrumentation scope, each scope's spans in the order
// they ended. The agent calls itself support_bot, version 2, on its
// invoke_agent span (gen_ai.agent.name/version) and on its tool span —
// names that differ from the service's. Below invoke_agent: a chat call
// that asks for a tool, the tool (with the HTTP call it makes), and a chat
// call that answers.
func pythonSDKAgent() ptrace.Traces {
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	ra := rs.Resource().Attributes()
	ra.PutStr("telemetry.sdk.language", "python")
	ra.PutStr("telemetry.sdk.name", "opentelemetry")
	ra.PutStr("telemetry.sdk.version", "1.38.0")
	ra.PutStr("service.name", "support-agent")
	ra.PutStr("service.version", "v1.5.0")
	ra.PutStr("deployment.environment.name", "production")

	trace := tid("8f1d3c5e7a9b2d4f6a8c0e1f3b5d7f90")
	const root = "1a2b3c4d5e6f7081"
	const conv = "conv_68d2a1f0c3b84e81"
	start := pcommon.Timestamp(t0 + 10_000_000_000)
	span := func(ss ptrace.ScopeSpans, id, parent, name string, kind ptrace.SpanKind, s, e int64) ptrace.Span {
		sp := ss.Spans().AppendEmpty()
		sp.SetTraceID(trace)
		sp.SetSpanID(sid(id))
		if parent != "" {
			sp.SetParentSpanID(sid(parent))
		}
		sp.SetName(name)
		sp.SetKind(kind)
		sp.SetStartTimestamp(start + pcommon.Timestamp(s))
		sp.SetEndTimestamp(start + pcommon.Timestamp(e))
		return sp
	}
	chat := func(ss ptrace.ScopeSpans, id string, s, e int64, in, out int64, finish string) {
		sp := span(ss, id, root, "chat gpt-4o-mini", ptrace.SpanKindClient, s, e)
		a := sp.Attributes()
		a.PutStr("gen_ai.operation.name", "chat")
		a.PutStr("gen_ai.provider.name", "openai")
		a.PutStr("gen_ai.request.model", "gpt-4o-mini")
		a.PutStr("gen_ai.response.model", "gpt-4o-mini-2024-07-18")
		a.PutStr("gen_ai.response.id", "chatcmpl-"+id)
		a.PutInt("gen_ai.usage.input_tokens", in)
		a.PutInt("gen_ai.usage.output_tokens", out)
		a.PutEmptySlice("gen_ai.response.finish_reasons").AppendEmpty().SetStr(finish)
		a.PutStr("server.address", "api.openai.com")
		a.PutInt("server.port", 443)
	}

	llm := rs.ScopeSpans().AppendEmpty()
	llm.Scope().SetName("opentelemetry.instrumentation.openai_v2")
	llm.Scope().SetVersion("2.1b0")
	chat(llm, "2b3c4d5e6f708192", 20_000_000, 910_000_000, 1432, 38, "tool_calls")
	chat(llm, "4d5e6f708192a3b4", 1_080_000_000, 2_310_000_000, 1561, 187, "stop")

	http := rs.ScopeSpans().AppendEmpty()
	http.Scope().SetName("opentelemetry.instrumentation.requests")
	http.Scope().SetVersion("0.59b0")
	get := span(http, "5e6f708192a3b4c5", "3c4d5e6f708192a3", "GET", ptrace.SpanKindClient, 930_000_000, 1_040_000_000)
	get.Attributes().PutStr("http.request.method", "GET")
	get.Attributes().PutStr("url.full", "https://orders.internal/v1/orders/A-1042")
	get.Attributes().PutInt("http.response.status_code", 200)

	agents := rs.ScopeSpans().AppendEmpty()
	agents.Scope().SetName("opentelemetry.instrumentation.openai_agents")
	agents.Scope().SetVersion("0.1b0")
	tool := span(agents, "3c4d5e6f708192a3", root, "execute_tool lookup_order", ptrace.SpanKindInternal, 920_000_000, 1_050_000_000)
	a := tool.Attributes()
	a.PutStr("gen_ai.operation.name", "execute_tool")
	a.PutStr("gen_ai.tool.name", "lookup_order")
	a.PutStr("gen_ai.tool.type", "function")
	a.PutStr("gen_ai.tool.call.id", "call_Q1mX0c8YpVb2")
	a.PutStr("gen_ai.agent.name", "support_bot")
	agent := span(agents, root, "", "invoke_agent support_bot", ptrace.SpanKindInternal, 0, 2_350_000_000)
	a = agent.Attributes()
	a.PutStr("gen_ai.operation.name", "invoke_agent")
	a.PutStr("gen_ai.provider.name", "openai")
	a.PutStr("gen_ai.agent.id", "agent_7f3a9c")
	a.PutStr("gen_ai.agent.name", "support_bot")
	a.PutStr("gen_ai.agent.version", "2")
	a.PutStr("gen_ai.request.model", "gpt-4o-mini")
	a.PutStr("gen_ai.conversation.id", conv)
	agent.Status().SetCode(ptrace.StatusCodeOk)
	return td
}
