package sink

import (
	"bufio"
	"bytes"
	"io"
	"strings"

	"github.com/VictoriaMetrics/metrics"
)

// Family is one metric family that /metrics may carry: its name, its
// Prometheus type, its labels and the HELP text that says what it counts.
type Family struct {
	Name   string
	Type   string // counter, gauge, histogram or summary
	Labels string // label names, comma-separated; "" for none
	Help   string
}

// Families lists every family canaryd writes on /metrics, its own and the
// Go runtime's and process's (VictoriaMetrics/metrics' WriteProcessMetrics),
// with the HELP text WriteMetrics puts on it. It is the one place a family
// is documented: a family written without an entry here has an empty HELP,
// which `promtool check metrics` reports (TestMetricsDocumented and the
// daemon's promtool test fail on it).
var Families = []Family{
	// Rollouts (internal/daemon): judged from closed windows.
	{"canaryd_rollout_info", "gauge", "rollout,baseline,canary,deployment_id,commit,phase,mode", "Always 1: one series per judged rollout naming its release (baseline and canary versions, deployment id, commit), its phase (pending, progressing, paused, awaiting_approval, promote, rollback, hold) and mode (drive or judge); replaced when the release changes."},
	{"canaryd_rollout_step", "gauge", "rollout", "Index of the rollout's current step (-1 before the first)."},
	{"canaryd_rollout_weight", "gauge", "rollout", "Percentage of traffic the canary gets in the current step (set by canaryd in drive mode, declared by the controller or observed in judge mode; 100 after promote, 0 after rollback)."},
	{"canaryd_rollout_final", "gauge", "rollout,final", "1 for an ended release, labelled with how it ended (promote, rollback, hold); restored with the judge's state after a restart; gone once the rollout is evicted."},
	{"canaryd_judge_verdict", "gauge", "rollout", "The rollout's gate as a number for controllers: 0 wait, 1 pass, 2 hold, 3 fail (NaN once the rollout left the specs)."},
	{"canaryd_test_evalue", "gauge", "rollout,test,role", "E-value of each statistical test at the last verdict (rollback, promote or validity role); the test fires when it reaches canaryd_test_threshold."},
	{"canaryd_test_threshold", "gauge", "rollout,test,role", "Threshold (1/alpha) the test's e-value must reach to fire."},
	{"canaryd_verdicts_total", "counter", "rollout,action", "Decisions other than continue whose command was sent (set_weight, promote, rollback, hold)."},
	{"canaryd_requests_total", "counter", "rollout,version", "Requests (llm, tool, retrieval and other events) in closed windows, per version."},
	{"canaryd_errors_total", "counter", "rollout,version", "Failed requests in closed windows, per version."},
	{"canaryd_latency_seconds", "histogram", "rollout,version,kind,name", "Duration of requests in closed windows, per version and segment (kind llm, tool, retrieval or other; name: the model, tool or route)."},
	{"canaryd_agent_calls_total", "counter", "rollout,version,kind,name", "Tool and model calls in closed windows."},
	{"canaryd_agent_errors_total", "counter", "rollout,version,kind,name,error_type", "Failed tool and model calls in closed windows, by error type."},
	{"canaryd_agent_tokens_total", "counter", "rollout,version,kind,name,direction", "Input and output tokens of model calls in closed windows."},
	{"canaryd_agent_cost_usd_total", "counter", "rollout,version,kind,name", "Cost in US dollars of the model calls that carry one, in closed windows."},
	{"canaryd_unjudged_windows_total", "counter", "", "Closed windows of rollouts that have no spec (not judged)."},
	{"canaryd_replayed_windows_total", "counter", "", "Closed windows a judge had already observed (replayed after a restart): ignored."},
	{"canaryd_judge_restores_total", "counter", "result", "Judge states at start or hand-over: restored, mismatch (spec changed), corrupt, handed_over, stage2 (from the state a stage-2 owner published)."},
	{"canaryd_decision_latency_seconds", "histogram", "", "Time from the close of the window that decided a command (in its source partition) to the command on the control topic."},
	{"canaryd_rollouts_split", "gauge", "", "Rollouts judged here from several partitions while other instances share the consumer group, without two stages: each instance judges its own share (run with --two-stage)."},
	{"canaryd_partials_published_total", "counter", "", "Two-stage aggregation: closed windows published to the partials topic by stage 1."},
	{"canaryd_partial_bytes", "summary", "", "Two-stage aggregation: size in bytes of each partial published."},
	{"canaryd_partials_received_total", "counter", "result", "Two-stage aggregation: partials read by stage 2: ok (judged, or ignored as already seen), corrupt (not a partial)."},
	{"canaryd_stage2_saves_total", "counter", "", "Two-stage aggregation: stage-2 states (judges, unsent commands, offset) published to the state topic."},
	{"canaryd_stage2_save_errors_total", "counter", "", "Two-stage aggregation: stage-2 states that could not be published (their offsets are not committed)."},
	{"canaryd_stage2_partitions_assigned", "gauge", "", "Two-stage aggregation: partitions of the partials topic this instance judges."},
	{"canaryd_stage2_restores_total", "counter", "result", "Two-stage aggregation: partials partitions assigned, by where their judges came from: published (the state topic), none, corrupt."},
	{"canaryd_outbox_commands", "gauge", "", "Commands decided and not yet written to the control topic."},
	{"canaryd_command_send_errors_total", "counter", "", "Failed attempts to write a command to the control topic (retried)."},
	// Routers' acknowledgements (internal/daemon/acks.go, with --acks-topic).
	{"canaryd_router_acks_total", "counter", "rollout,router", "Acknowledgements read from the acks topic, per rollout and router (valid records of rollouts with a spec)."},
	{"canaryd_router_weight", "gauge", "rollout,router", "The canary weight (percent) the router last acknowledged applying for the rollout."},
	{"canaryd_router_ack_missing", "gauge", "rollout,router", "1 while the router, which acknowledged earlier commands of the rollout, has not acknowledged its latest command within --ack-timeout of its publication; else 0."},
	{"canaryd_acks_invalid_total", "counter", "reason", "Ack records skipped: not_json, invalid (schemas.Ack.Validate), key_mismatch (key is not the rollout), unknown_rollout (no spec), too_many_routers (more than 256 router ids for the rollout)."},
	// canaryd route (route.Driver and the router library's counters): the
	// router side, on the route command's own /metrics.
	{"canaryd_route_applies_total", "counter", "rollout,result", "Attempts to put a rollout's latest command in force on its route: applied, error (retried with backoff), permanent_error (not retried: fix the route), superseded (a newer command came first), unknown_rollout (no route configured), cohort (a cohort step, which route weights cannot express)."},
	{"canaryd_route_weight", "gauge", "rollout", "The canary weight (percent) last put in force on the rollout's route."},
	{"canaryd_route_pending", "gauge", "rollout", "1 while the rollout's latest command is not in force on its route (being applied, retried, or refused for good), else 0."},
	{"canaryd_route_apply_duration_seconds", "histogram", "", "Duration of one attempt to put a command in force on a route (HAProxy runtime API calls, a Kubernetes apply, a git commit and push)."},
	{"canaryd_route_decision_to_applied_seconds", "histogram", "", "Time from canaryd's decision (the command's decided_at, canaryd's clock) to the command being in force on the route (this router's clock)."},
	{"canaryd_route_commands_total", "counter", "result,reason", "Control records read: applied (passed the rules), stale (seq not above the last), duplicate (command id seen), tombstone, refused (by reason: not_json, invalid, key_mismatch, unsigned, bad_signature)."},
	{"canaryd_route_acks_total", "counter", "result", "Acknowledgements: sent (the broker has them), failed (could not be produced), not_applied (commands that could not be put in force, so not acknowledged)."},
	{"canaryd_operator_actions_total", "counter", "rollout,action", "Operator actions accepted over HTTP (pause, resume, approve, abort, retry, …)."},
	{"canaryd_specs_valid", "gauge", "", "1 when the spec files last read are valid, else 0 (the last valid specs stay in force)."},
	{"canaryd_spec_reloads_total", "counter", "result", "Spec file reloads, by result."},
	{"canaryd_spec_edits_refused_total", "counter", "", "Spec edits that cannot apply to a running rollout (the running spec stays)."},
	{"canaryd_otlp_rules_reloads_total", "counter", "result", "OTLP mapping rules reloads, by result."},

	// Consumer (stream).
	{"canaryd_records_total", "counter", "", "Kafka records consumed."},
	{"canaryd_records_rejected_total", "counter", "reason", "Records sent to the dead-letter topic, by reason."},
	{"canaryd_records_replayed_total", "counter", "", "Records decoded again after a restore to rebuild session assembly (their events are dropped)."},
	{"canaryd_events_late_total", "counter", "rollout", "Events behind the watermark, dropped."},
	{"canaryd_consumer_lag", "gauge", "topic,partition", "Records not yet processed: the broker's end offset minus the next offset to process."},
	{"canaryd_live_rollouts", "gauge", "topic,partition", "Rollouts with state in a partition (evicted when idle)."},
	{"canaryd_partitions_assigned", "gauge", "", "Partitions owned by this instance."},
	{"canaryd_broker_contact_age_seconds", "gauge", "", "Seconds since the broker last answered."},
	{"canaryd_dead_letters_unwritten_total", "counter", "", "Dead letters given up at shutdown (their offsets stay uncommitted)."},
	{"canaryd_fetch_errors_total", "counter", "", "Fetch errors (the client retries)."},
	{"canaryd_checkpoints_total", "counter", "", "Checkpoints written."},
	{"canaryd_checkpoint_errors_total", "counter", "", "Checkpoints that failed (their offsets are not committed)."},
	{"canaryd_checkpoint_healthy", "gauge", "", "1 when the last checkpoint succeeded, else 0."},
	{"canaryd_checkpoint_seconds", "summary", "", "Time to write a checkpoint."},
	{"canaryd_checkpoint_bytes", "gauge", "", "Size in bytes of the last checkpoint written."},
	{"canaryd_checkpoint_restores_total", "counter", "result", "Partitions assigned, by how their state was restored: restored, stale, corrupt, none."},
	{"canaryd_rollouts_limit_total", "counter", "", "Events refused because their partition is at its live-rollout limit."},
	{"canaryd_sessions_untracked_total", "counter", "", "Sessions neither counted nor remembered by the SRM check's session memory, because it was full even after forgetting its older half."},
	{"canaryd_models_cost_filled_total", "counter", "", "Model calls given a cost from the price table."},
	{"canaryd_models_context_filled_total", "counter", "", "Model calls given a context limit from the price table."},
	{"canaryd_models_unknown_total", "counter", "", "Model calls without a cost whose model is not in the price table."},
	{"canaryd_otlp_skipped_total", "counter", "signal,reason", "OTLP spans or log records not turned into events: a value out of range."},
	{"canaryd_otlp_ignored_total", "counter", "signal", "OTLP spans (not GenAI) or log records (not evaluation results) not mapped."},
	{"canaryd_otlp_unattributed_total", "counter", "signal,field", "OTLP events emitted without a resolved rollout or version (field says which)."},
	{"canaryd_otlp_resolved_total", "counter", "signal,field,rule", "OTLP events emitted, by the rule that resolved their rollout or version."},
	{"canaryd_otlp_trace_joins_total", "counter", "result", "Evaluation log records looked up by trace, by result."},
	{"canaryd_otlp_trace_index_traces", "gauge", "", "Traces held by the OTLP trace index."},
	{"canaryd_otlp_trace_index_evictions_total", "counter", "", "Traces dropped from the OTLP trace index to make room."},
	{"canaryd_otlp_trace_index_dropped_total", "counter", "", "Traces not indexed: the index's pairs were all in use."},
	{"canaryd_sessions_assembled_total", "counter", "", "Agent or task events enriched from at least one remembered span."},
	{"canaryd_sessions_unassembled_total", "counter", "", "Agent or task events that found no remembered span of their trace."},
	{"canaryd_sessions_evicted_total", "counter", "reason", "Traces dropped with spans no agent or task span had covered, by reason."},
	{"canaryd_sessions_truncated_total", "counter", "", "Traces that reached the span limit (later spans not remembered)."},

	// Sink: commands, dead letters, HTTP.
	{"canaryd_commands_sent_total", "counter", "rollout,action", "Commands written to the control topic."},
	{"canaryd_commands_skipped_total", "counter", "", "Decisions already sent before (deduplicated)."},
	{"canaryd_commands_unsigned_ignored_total", "counter", "", "Control-topic commands without a valid signature: ignored."},
	{"canaryd_dlq_records_total", "counter", "", "Records written to the dead-letter topic."},
	{"canaryd_http_refused_total", "counter", "reason", "HTTP requests refused, by reason."},
	{"canaryd_flagger_hooks_total", "counter", "hook,answer", "Flagger webhook calls answered, by hook and answer."},

	// Go runtime (VictoriaMetrics/metrics).
	{"go_info", "gauge", "version", "Always 1: the Go version canaryd was built with."},
	{"go_info_ext", "gauge", "compiler,GOARCH,GOOS,GOROOT", "Always 1: the Go compiler, architecture and OS canaryd was built for."},
	{"go_goroutines", "gauge", "", "Goroutines that exist."},
	{"go_threads", "gauge", "", "OS threads created."},
	{"go_gomaxprocs", "gauge", "", "GOMAXPROCS: CPUs that run Go code at once."},
	{"go_memlimit_bytes", "gauge", "", "The Go runtime's soft memory limit (GOMEMLIMIT)."},
	{"go_sched_latencies_seconds", "histogram", "", "Time goroutines spent runnable before running."},
	{"go_mutex_wait_seconds_total", "counter", "", "Time goroutines spent blocked on a sync.Mutex or sync.RWMutex."},
	{"go_gc_duration_seconds", "summary", "", "Stop-the-world pause durations of the garbage collector."},
	{"go_gc_pauses_seconds", "histogram", "", "Stop-the-world pause durations of the garbage collector."},
	{"go_gc_cpu_seconds_total", "counter", "", "CPU time spent by the garbage collector."},
	{"go_gc_mark_assist_cpu_seconds_total", "counter", "", "CPU time goroutines spent assisting the garbage collector."},
	{"go_scavenge_cpu_seconds_total", "counter", "", "CPU time spent returning memory to the OS."},
	{"go_memstats_alloc_bytes", "gauge", "", "Bytes of allocated heap objects."},
	{"go_memstats_alloc_bytes_total", "counter", "", "Bytes allocated for heap objects, ever."},
	{"go_memstats_buck_hash_sys_bytes", "gauge", "", "Bytes of memory in profiling bucket hash tables."},
	{"go_memstats_frees_total", "counter", "", "Heap objects freed."},
	{"go_memstats_gc_cpu_fraction", "gauge", "", "Fraction of CPU time used by the garbage collector since the program started."},
	{"go_memstats_gc_sys_bytes", "gauge", "", "Bytes of memory in garbage collection metadata."},
	{"go_memstats_heap_alloc_bytes", "gauge", "", "Bytes of allocated heap objects."},
	{"go_memstats_heap_idle_bytes", "gauge", "", "Bytes in idle (unused) heap spans."},
	{"go_memstats_heap_inuse_bytes", "gauge", "", "Bytes in in-use heap spans."},
	{"go_memstats_heap_objects", "gauge", "", "Allocated heap objects."},
	{"go_memstats_heap_released_bytes", "gauge", "", "Bytes of physical memory returned to the OS."},
	{"go_memstats_heap_sys_bytes", "gauge", "", "Bytes of heap memory obtained from the OS."},
	{"go_memstats_last_gc_time_seconds", "gauge", "", "Unix time of the last garbage collection."},
	{"go_memstats_lookups_total", "counter", "", "Pointer lookups performed by the runtime."},
	{"go_memstats_mallocs_total", "counter", "", "Heap objects allocated."},
	{"go_memstats_mcache_inuse_bytes", "gauge", "", "Bytes of allocated mcache structures."},
	{"go_memstats_mcache_sys_bytes", "gauge", "", "Bytes of memory obtained from the OS for mcache structures."},
	{"go_memstats_mspan_inuse_bytes", "gauge", "", "Bytes of allocated mspan structures."},
	{"go_memstats_mspan_sys_bytes", "gauge", "", "Bytes of memory obtained from the OS for mspan structures."},
	{"go_memstats_next_gc_bytes", "gauge", "", "Heap size at which the next garbage collection starts."},
	{"go_memstats_other_sys_bytes", "gauge", "", "Bytes of memory in miscellaneous off-heap runtime allocations."},
	{"go_memstats_stack_inuse_bytes", "gauge", "", "Bytes in stack spans."},
	{"go_memstats_stack_sys_bytes", "gauge", "", "Bytes of stack memory obtained from the OS."},
	{"go_memstats_sys_bytes", "gauge", "", "Bytes of memory obtained from the OS."},

	// Process (VictoriaMetrics/metrics; Linux).
	{"process_cpu_seconds_total", "counter", "", "CPU time used by the process (user and system)."},
	{"process_cpu_seconds_user_total", "counter", "", "CPU time used by the process in user mode."},
	{"process_cpu_seconds_system_total", "counter", "", "CPU time used by the process in kernel mode."},
	{"process_major_pagefaults_total", "counter", "", "Page faults that needed disk I/O."},
	{"process_minor_pagefaults_total", "counter", "", "Page faults served without disk I/O."},
	{"process_num_threads", "gauge", "", "OS threads of the process."},
	{"process_open_fds", "gauge", "", "File descriptors the process holds open."},
	{"process_max_fds", "gauge", "", "Limit on the process's open file descriptors."},
	{"process_resident_memory_bytes", "gauge", "", "Resident memory of the process."},
	{"process_resident_memory_peak_bytes", "gauge", "", "Peak resident memory of the process."},
	{"process_resident_memory_anon_bytes", "gauge", "", "Resident anonymous memory of the process."},
	{"process_resident_memory_file_bytes", "gauge", "", "Resident file-backed memory of the process."},
	{"process_resident_memory_shared_bytes", "gauge", "", "Resident shared memory of the process."},
	{"process_virtual_memory_bytes", "gauge", "", "Virtual memory of the process."},
	{"process_virtual_memory_peak_bytes", "gauge", "", "Peak virtual memory of the process."},
	{"process_start_time_seconds", "gauge", "", "Unix time the process started."},
	{"process_io_read_bytes_total", "counter", "", "Bytes the process read (read syscalls, including the page cache)."},
	{"process_io_written_bytes_total", "counter", "", "Bytes the process wrote (write syscalls, including the page cache)."},
	{"process_io_read_syscalls_total", "counter", "", "Read syscalls of the process."},
	{"process_io_write_syscalls_total", "counter", "", "Write syscalls of the process."},
	{"process_io_storage_read_bytes_total", "counter", "", "Bytes the process read from storage."},
	{"process_io_storage_written_bytes_total", "counter", "", "Bytes the process wrote to storage."},
	{"process_pressure_cpu_waiting_seconds_total", "counter", "", "Time some of the process's tasks waited for CPU (cgroup PSI)."},
	{"process_pressure_cpu_stalled_seconds_total", "counter", "", "Time all of the process's tasks were stalled on CPU (cgroup PSI)."},
	{"process_pressure_io_waiting_seconds_total", "counter", "", "Time some of the process's tasks waited for I/O (cgroup PSI)."},
	{"process_pressure_io_stalled_seconds_total", "counter", "", "Time all of the process's tasks were stalled on I/O (cgroup PSI)."},
	{"process_pressure_memory_waiting_seconds_total", "counter", "", "Time some of the process's tasks waited for memory (cgroup PSI)."},
	{"process_pressure_memory_stalled_seconds_total", "counter", "", "Time all of the process's tasks were stalled on memory (cgroup PSI)."},
	{"process_cgroup_cpu_throttled_seconds_total", "counter", "", "Time the process's cgroup was throttled by its CPU quota."},
}

// droppedFamilies are families of WriteProcessMetrics whose names break
// the conventions promtool checks (a counter without _total, a _count
// suffix on a non-histogram): /metrics leaves them out. go_gomaxprocs and
// go_gc_duration_seconds_count say what they would.
var droppedFamilies = map[string]bool{
	"go_cgo_calls_count": true,
	"go_cpu_count":       true,
	"go_gc_forced_count": true,
}

// fixedTypes are families written with the wrong type: counters (they only
// grow, and end in _total) written as gauges.
var fixedTypes = map[string]string{
	"process_io_read_bytes_total":            "counter",
	"process_io_written_bytes_total":         "counter",
	"process_io_read_syscalls_total":         "counter",
	"process_io_write_syscalls_total":        "counter",
	"process_io_storage_read_bytes_total":    "counter",
	"process_io_storage_written_bytes_total": "counter",
	// canaryd route reads these from the router library's counters at
	// each scrape (metrics.Set.NewGauge with a callback).
	"canaryd_route_commands_total": "counter",
	"canaryd_route_acks_total":     "counter",
}

var familyByName = func() map[string]*Family {
	m := make(map[string]*Family, len(Families))
	for i := range Families {
		f := &Families[i]
		if m[f.Name] != nil {
			panic("BUG: metric family " + f.Name + " listed twice")
		}
		m[f.Name] = f
	}
	return m
}()

// LookupFamily returns the documented family of that name.
func LookupFamily(name string) (Family, bool) {
	f := familyByName[name]
	if f == nil {
		return Family{}, false
	}
	return *f, true
}

// WriteMetrics writes ms and the Go runtime's and process's metrics in the
// Prometheus text format, with a HELP and a TYPE line per family: the HELP
// text comes from Families, the type from the library (fixed where it is
// wrong: fixedTypes). It is what /metrics serves.
func WriteMetrics(w io.Writer, ms *metrics.Set) {
	// Process-wide in the library: it only makes it write the metadata
	// lines, which every Prometheus parser reads.
	metrics.ExposeMetadata(true)
	var buf bytes.Buffer
	ms.WritePrometheus(&buf)
	metrics.WriteProcessMetrics(&buf)
	bw := bufio.NewWriter(w)
	documentExposition(bw, buf.Bytes())
	bw.Flush()
}

// documentExposition copies the exposition in to w, filling in the HELP
// lines from Families, fixing the TYPE lines of fixedTypes and leaving out
// droppedFamilies.
func documentExposition(w *bufio.Writer, in []byte) {
	for len(in) > 0 {
		line := in
		if i := bytes.IndexByte(in, '\n'); i >= 0 {
			line, in = in[:i], in[i+1:]
		} else {
			in = nil
		}
		s := string(line)
		switch {
		case strings.HasPrefix(s, "# HELP "):
			name, _, _ := strings.Cut(s[len("# HELP "):], " ")
			if droppedFamilies[name] {
				continue
			}
			if f := familyByName[name]; f != nil {
				s = "# HELP " + name + " " + escapeHelp(f.Help)
			}
		case strings.HasPrefix(s, "# TYPE "):
			name, _, _ := strings.Cut(s[len("# TYPE "):], " ")
			if droppedFamilies[name] {
				continue
			}
			if t, ok := fixedTypes[name]; ok {
				s = "# TYPE " + name + " " + t
			}
		case strings.HasPrefix(s, "#") || s == "":
		default:
			name := s
			if i := strings.IndexAny(s, "{ "); i >= 0 {
				name = s[:i]
			}
			if droppedFamilies[name] {
				continue
			}
		}
		w.WriteString(s)
		w.WriteByte('\n')
	}
}

// escapeHelp escapes a HELP text as the text format wants: backslash and
// newline.
func escapeHelp(s string) string {
	return strings.NewReplacer(`\`, `\\`, "\n", `\n`).Replace(s)
}
