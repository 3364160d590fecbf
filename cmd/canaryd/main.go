// Command canaryd is a streaming canary judge for AI agents.
//
//	canaryd run       the daemon: read agent events from Kafka, judge, command
//	canaryd demo      everything in one process on an embedded broker
//	canaryd validate  check rollout spec files and exit
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/inferensys/canaryd/detector"
	"github.com/inferensys/canaryd/internal/daemon"
	"github.com/inferensys/canaryd/stream"
	"github.com/inferensys/canaryd/window"
)

const usage = `canaryd — a streaming canary judge for AI agents

Usage:
  canaryd run      [flags]   read agent events from Kafka, judge canaries, send commands
  canaryd demo     [flags]   embedded broker + simulated fleet + canaryd, no set-up
  canaryd validate SPEC...   check rollout spec files or directories and exit

Run 'canaryd <command> --help' for a command's flags.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch os.Args[1] {
	case "run":
		err = runCmd(ctx, os.Args[2:])
	case "demo":
		err = demoCmd(ctx, os.Args[2:], os.Stdout)
	case "validate":
		err = validateCmd(os.Args[2:], os.Stdout)
	case "-h", "--help", "help":
		fmt.Print(usage)
		return
	default:
		fmt.Fprintf(os.Stderr, "canaryd: unknown command %q\n\n%s", os.Args[1], usage)
		os.Exit(2)
	}
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "canaryd:", err)
		os.Exit(1)
	}
}

// env returns the environment variable's value or def.
func env(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}

func envDuration(name string, def time.Duration) time.Duration {
	if v, ok := os.LookupEnv(name); ok {
		if d, err := time.ParseDuration(v); err == nil {
			return d
		}
	}
	return def
}

func runCmd(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `canaryd run — the daemon

Reads agent events (JSON v1, see schemas/agent-event.v1.json) from Kafka,
compares each rollout's canary with its baseline with anytime-valid
sequential tests, and writes set_weight / promote / rollback commands to the
control topic. Every flag has an environment variable (shown in brackets).

Flags:
`)
		fs.PrintDefaults()
	}
	brokers := fs.String("brokers", env("CANARYD_BROKERS", ""), "Kafka seed brokers, comma-separated [CANARYD_BROKERS]")
	specs := fs.String("specs", env("CANARYD_SPECS", ""), "rollout spec YAML file or directory [CANARYD_SPECS]")
	events := fs.String("events-topic", env("CANARYD_EVENTS_TOPIC", "agent.events"), "events topic [CANARYD_EVENTS_TOPIC]")
	control := fs.String("control-topic", env("CANARYD_CONTROL_TOPIC", "canary.control"), "control topic [CANARYD_CONTROL_TOPIC]")
	dlq := fs.String("dlq-topic", env("CANARYD_DLQ_TOPIC", "agent.events.dlq"), "dead-letter topic [CANARYD_DLQ_TOPIC]")
	group := fs.String("group", env("CANARYD_GROUP", "canaryd"), "consumer group [CANARYD_GROUP]")
	httpAddr := fs.String("http", env("CANARYD_HTTP", ":8080"), "HTTP address for /metrics, /healthz, /v1/rollouts [CANARYD_HTTP]")
	width := fs.Duration("window", envDuration("CANARYD_WINDOW", 10*time.Second), "event-time window width [CANARYD_WINDOW]")
	lateness := fs.Duration("lateness", envDuration("CANARYD_LATENESS", 5*time.Second), "allowed lateness behind the newest event time [CANARYD_LATENESS]")
	// A crashed instance's partitions wait this long for another instance;
	// Kafka bounds it with group.min.session.timeout.ms (default 6s).
	sessionTimeout := fs.Duration("session-timeout", envDuration("CANARYD_SESSION_TIMEOUT", 45*time.Second), "consumer group session timeout: how long before a crashed instance's partitions go to the others [CANARYD_SESSION_TIMEOUT]")
	otlpSpans := fs.String("otlp-spans-topic", env("CANARYD_OTLP_SPANS_TOPIC", ""), "also consume OTLP spans from this topic (the Collector's Kafka exporter, e.g. otlp_spans) [CANARYD_OTLP_SPANS_TOPIC]")
	otlpLogs := fs.String("otlp-logs-topic", env("CANARYD_OTLP_LOGS_TOPIC", ""), "also consume OTLP evaluation log events from this topic (e.g. otlp_logs) [CANARYD_OTLP_LOGS_TOPIC]")
	otlpEnc := fs.String("otlp-encoding", env("CANARYD_OTLP_ENCODING", "otlp_proto"), "encoding of the OTLP topics: otlp_proto or otlp_json [CANARYD_OTLP_ENCODING]")
	modelsFile := fs.String("models", env("CANARYD_MODELS", ""), "model table YAML: context limits and prices per model, to fill in context use and cost (see deploy/models.yaml) [CANARYD_MODELS]")
	noCreate := fs.Bool("no-create-topics", env("CANARYD_NO_CREATE_TOPICS", "") != "", "do not create missing topics [CANARYD_NO_CREATE_TOPICS]")
	signKeyFile := fs.String("sign-key-file", env("CANARYD_SIGN_KEY_FILE", ""), "file with the HMAC key that signs commands [CANARYD_SIGN_KEY_FILE]")
	useTLS := fs.Bool("tls", env("CANARYD_TLS", "") != "", "connect to Kafka with TLS [CANARYD_TLS]")
	saslMech := fs.String("sasl-mechanism", env("CANARYD_SASL_MECHANISM", ""), "SASL mechanism: plain, scram-sha-256 or scram-sha-512 [CANARYD_SASL_MECHANISM]")
	saslUser := fs.String("sasl-user", env("CANARYD_SASL_USER", ""), "SASL user [CANARYD_SASL_USER]")
	stateDir := fs.String("state-dir", env("CANARYD_STATE_DIR", ""), "directory of the Badger checkpoints (window state, offsets, judge state); empty: state in memory only, a restart replays from the committed offsets and loses the judges' evidence [CANARYD_STATE_DIR]")
	ckInterval := fs.Duration("checkpoint-interval", envDuration("CANARYD_CHECKPOINT_INTERVAL", 5*time.Second), "time between a partition's checkpoints; offsets are committed only with a checkpoint [CANARYD_CHECKPOINT_INTERVAL]")
	stateTopic := fs.String("state-topic", env("CANARYD_STATE_TOPIC", "canaryd.state"), "compacted topic that hands a revoked partition's checkpoint to its next owner (with --state-dir) [CANARYD_STATE_TOPIC]")
	evictAfter := fs.Duration("evict-after", envDuration("CANARYD_EVICT_AFTER", time.Hour), "drop a rollout's partition state this long (event time) after its last event, and its export history this long after its final verdict [CANARYD_EVICT_AFTER]")
	historyWindows := fs.Int("history-windows", 360, "closed windows per rollout kept for the Arrow export (older ones are folded into one row per series)")
	verbose := fs.Bool("v", false, "debug logging")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *brokers == "" {
		return errors.New("run: --brokers (or CANARYD_BROKERS) is required")
	}
	if *specs == "" {
		return errors.New("run: --specs (or CANARYD_SPECS) is required")
	}
	ss, err := detector.LoadSpecs(*specs)
	if err != nil {
		return err
	}
	var models *stream.ModelTable
	if *modelsFile != "" {
		if models, err = stream.LoadModelTable(*modelsFile); err != nil {
			return err
		}
	}
	kopts, err := securityOpts(*useTLS, *saslMech, *saslUser, os.Getenv("CANARYD_SASL_PASSWORD"))
	if err != nil {
		return err
	}
	// A group option: the clients without a group (producer, control reader) ignore it.
	kopts = append(kopts, kgo.SessionTimeout(*sessionTimeout))
	var signKey []byte
	if *signKeyFile != "" {
		if signKey, err = os.ReadFile(*signKeyFile); err != nil {
			return fmt.Errorf("sign key: %w", err)
		}
		signKey = []byte(strings.TrimSpace(string(signKey)))
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	d, err := daemon.New(daemon.Config{
		Brokers: strings.Split(*brokers, ","), EventsTopic: *events, ControlTopic: *control, DLQTopic: *dlq,
		Group: *group, NoCreateTopics: *noCreate, OTLPSpansTopic: *otlpSpans, OTLPLogsTopic: *otlpLogs, OTLPEncoding: *otlpEnc, Specs: ss, Models: models, HTTPAddr: *httpAddr,
		StateDir: *stateDir, StateTopic: *stateTopic, CheckpointInterval: *ckInterval, HistoryWindows: *historyWindows, EvictAfter: *evictAfter,
		Window: window.Options{Width: *width, Lateness: *lateness}, SignKey: signKey, KgoOpts: kopts, Logger: log,
	})
	if err != nil {
		return err
	}
	log.Info("serving HTTP", "addr", d.HTTPAddr())
	return d.Run(ctx)
}

func securityOpts(useTLS bool, mech, user, pass string) ([]kgo.Opt, error) {
	var opts []kgo.Opt
	if useTLS {
		opts = append(opts, kgo.DialTLSConfig(&tls.Config{MinVersion: tls.VersionTLS12}))
	}
	switch strings.ToLower(mech) {
	case "":
	case "plain":
		opts = append(opts, kgo.SASL(plain.Auth{User: user, Pass: pass}.AsMechanism()))
	case "scram-sha-256":
		opts = append(opts, kgo.SASL(scram.Auth{User: user, Pass: pass}.AsSha256Mechanism()))
	case "scram-sha-512":
		opts = append(opts, kgo.SASL(scram.Auth{User: user, Pass: pass}.AsSha512Mechanism()))
	default:
		return nil, fmt.Errorf("--sasl-mechanism %q: want plain, scram-sha-256 or scram-sha-512", mech)
	}
	return opts, nil
}

func validateCmd(args []string, out io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprintln(out, "usage: canaryd validate [--models MODELS_FILE] SPEC_FILE_OR_DIR...")
		if len(args) == 0 {
			return errors.New("validate: no spec given")
		}
		return nil
	}
	if args[0] == "--models" || strings.HasPrefix(args[0], "--models=") {
		file, rest := strings.TrimPrefix(args[0], "--models="), args[1:]
		if args[0] == "--models" {
			if len(args) < 2 {
				return errors.New("validate: --models needs a file")
			}
			file, rest = args[1], args[2:]
		}
		t, err := stream.LoadModelTable(file)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "%s: %d models: ok\n", file, len(t.Models()))
		if len(rest) == 0 {
			return nil
		}
		args = rest
	}
	for _, p := range args {
		ss, err := detector.LoadSpecs(p)
		if err != nil {
			return err
		}
		for _, s := range ss {
			var steps []string
			for _, st := range s.Steps {
				steps = append(steps, fmt.Sprintf("%d%%", st.Weight))
			}
			fmt.Fprintf(out, "%s:%d: rollout %s: %s → %s, steps %s, alpha %g, units %s: ok\n", s.File, s.Line, s.Rollout, s.Baseline, s.Canary, strings.Join(steps, " → "), s.Alpha, s.Units)
		}
	}
	return nil
}
