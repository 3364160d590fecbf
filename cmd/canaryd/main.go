// Command canaryd is a streaming canary judge for AI agents.
//
//	canaryd run       the daemon: read agent events from Kafka, judge, command
//	canaryd demo      everything in one process on an embedded broker
//	canaryd validate  check rollout spec files and exit
//	canaryd status    rollouts as a running canaryd sees them
//	canaryd wait      wait for a rollout's verdict (exit 0 promoted, 1 rolled back, 2 held or timeout)
//	canaryd route     put control commands in force on HAProxy, Kubernetes routes or Git
//	canaryd version   the version and commit canaryd was built from
package main

import (
	"context"
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

	"github.com/inferensys/canaryd/detector"
	"github.com/inferensys/canaryd/internal/daemon"
	"github.com/inferensys/canaryd/route"
	"github.com/inferensys/canaryd/stream"
)

const usage = `canaryd — a streaming canary judge for AI agents

Usage:
  canaryd run      [flags]   read agent events from Kafka, judge canaries, send commands
  canaryd demo     [flags]   embedded broker + simulated fleet + canaryd, no set-up
  canaryd validate SPEC...   check rollout spec files or directories (and --models, --otlp-rules files) and exit
  canaryd status [ROLLOUT]   rollouts as a running canaryd sees them (its HTTP API)
  canaryd wait ROLLOUT       wait for a rollout's verdict: exit 0 promoted, 1 rolled back,
                             2 held or timeout, 3 error (for pipelines)
  canaryd route --routes F  follow the control topic and set the weights of HAProxy backends,
                             Kubernetes routes or Git files; acknowledge what was applied
  canaryd version            the version and commit canaryd was built from (also --version)
  canaryd pause|resume|approve|abort|retry ROLLOUT, canaryd start ROLLOUT --canary V
                             operator actions through the HTTP API (need a token)

Run 'canaryd <command> --help' for a command's flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is canaryd with its arguments (without the program name); it returns
// the exit code. Help goes to stdout with code 0, errors to stderr.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "run":
		err = runCmd(ctx, args[1:], stdout)
	case "demo":
		err = demoCmd(ctx, args[1:], stdout)
	case "validate":
		err = validateCmd(args[1:], stdout)
	case "status":
		err = statusCmd(ctx, args[1:], os.LookupEnv, stdout)
	case "pause", "resume", "approve", "abort", "retry", "start":
		err = actCmd(ctx, args[0], args[1:], os.LookupEnv, stdout)
	case "route":
		err = routeCmd(ctx, args[1:], stdout)
	case "wait":
		return waitCmd(ctx, args[1:], os.LookupEnv, stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, buildVersion())
		return 0
	case "-h", "--help", "-help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "canaryd: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "canaryd:", err)
		return 1
	}
	return 0
}

const runUsage = `canaryd run — the daemon

Reads agent events (JSON v1, see schemas/agent-event.v1.json) from Kafka,
compares each rollout's canary with its baseline with anytime-valid
sequential tests, and writes set_weight / promote / rollback commands to the
control topic.

Every flag has an environment variable, shown in brackets: CANARYD_ and the
flag's name in upper snake case (-v: CANARYD_VERBOSE). A flag on the command
line wins over its variable; a variable set to "" counts as unset. Values are
parsed strictly (booleans: true/false/1/0; durations with a unit: 30s, 5m;
integers in base 10); a bad one stops the start, naming the variable.
The SASL password has only a variable, CANARYD_SASL_PASSWORD, or a file
(--sasl-password-file).

Kafka security: any --tls-* flag implies --tls. --tls-ca-file is a PEM bundle
(default: the system roots); --tls-cert-file and --tls-key-file present a
client certificate (mTLS, e.g. Strimzi's TLS authentication). SASL over TLS
or plaintext: --sasl-mechanism plain, scram-sha-256 or scram-sha-512 with
--sasl-user and a password; oauthbearer with --sasl-oauth-token-file (read
again at each authentication, so a rotated Kubernetes projected token works).

Flags:
`

// runFlags are the values of `canaryd run`'s flags: a daemon.Config that
// starts as daemon.DefaultConfig(), and what is turned into Config fields
// after parsing.
type runFlags struct {
	cfg                                     daemon.Config
	brokers, specs, modelsFile, signKeyFile string
	otlpRulesFile                           string
	logLevel                                string
	verbose                                 bool
	sec                                     security
}

// newRunFlags defines the flags of `canaryd run`, each with its environment
// variable in its usage. Defaults come from daemon.DefaultConfig.
func newRunFlags() (*flag.FlagSet, *runFlags) {
	r := &runFlags{cfg: daemon.DefaultConfig(), logLevel: "info"}
	c := &r.cfg
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // runCmd prints help and errors itself
	dur := func(p *time.Duration, name, usage string) { fs.Var((*durationValue)(p), name, usage) }
	boolean := func(p *bool, name, usage string) { fs.Var((*boolValue)(p), name, usage) }

	fs.StringVar(&r.brokers, "brokers", "", "Kafka seed brokers, comma-separated (required)")
	fs.StringVar(&r.specs, "specs", "", "rollout spec YAML file or directory (required)")
	fs.StringVar(&c.EventsTopic, "events-topic", c.EventsTopic, "events topic")
	fs.StringVar(&c.ControlTopic, "control-topic", c.ControlTopic, "control topic")
	fs.StringVar(&c.DLQTopic, "dlq-topic", c.DLQTopic, "dead-letter topic")
	fs.StringVar(&c.AcksTopic, "acks-topic", "", "read routers' acknowledgements from this topic (e.g. canary.acks, what router.Acks writes by default): the status shows each router's applied weight, late routers are counted; empty: off")
	dur(&c.AckTimeout, "ack-timeout", "a router that has not acknowledged a rollout's latest command this long after it was published is lagging (with --acks-topic)")
	fs.StringVar(&c.Group, "group", c.Group, "consumer group")
	fs.Var((*int32Value)(&c.Partitions), "partitions", "partitions of the events topic when canaryd creates it")
	boolean(&c.NoCreateTopics, "no-create-topics", "do not create missing topics")
	fs.StringVar(&c.HTTPAddr, "http", c.HTTPAddr, "HTTP address for /metrics, /healthz, /v1/rollouts (\"\" on the command line: no HTTP server)")
	fs.StringVar(&c.HTTPTokenFile, "http-token-file", "", "file with the bearer tokens (one per line, TOKEN or NAME TOKEN) that the HTTP API's actions need; re-read when it changes; without it the actions are off")
	boolean(&c.HTTPProtectReads, "http-protect-reads", "the HTTP API's GET endpoints need a token too, except /healthz and /readyz (needs --http-token-file)")
	fs.StringVar(&c.HTTPTLSCert, "http-tls-cert", "", "serve the HTTP API over HTTPS with this certificate (PEM, re-read when it changes); needs --http-tls-key")
	fs.StringVar(&c.HTTPTLSKey, "http-tls-key", "", "private key (PEM) of --http-tls-cert")
	dur(&c.Window.Width, "window", "event-time window width")
	dur(&c.Window.Lateness, "lateness", "allowed lateness behind the newest event time")
	dur(&c.Window.MaxFuture, "max-future", "events further ahead of the wall clock than this go to the dead-letter topic")
	// A crashed instance's partitions wait this long for another instance;
	// Kafka bounds it with group.min.session.timeout.ms (default 6s).
	dur(&c.SessionTimeout, "session-timeout", "consumer group session timeout: how long before a crashed instance's partitions go to the others")
	fs.StringVar(&c.OTLPSpansTopic, "otlp-spans-topic", "", "also consume OTLP spans from this topic (the Collector's Kafka exporter, e.g. otlp_spans)")
	fs.StringVar(&c.OTLPLogsTopic, "otlp-logs-topic", "", "also consume OTLP evaluation log events from this topic (e.g. otlp_logs)")
	fs.StringVar(&c.OTLPEncoding, "otlp-encoding", c.OTLPEncoding, "encoding of the OTLP topics: otlp_proto or otlp_json")
	fs.StringVar(&r.otlpRulesFile, "otlp-rules", "", "OTLP rules YAML: which attributes name an OTLP event's rollout and version (default: the resource's service.name and service.version first; see deploy/otlp-rules.yaml)")
	fs.StringVar(&r.modelsFile, "models", "", "model table YAML: context limits and prices per model, to fill in context use and cost (see deploy/models.yaml)")
	fs.StringVar(&r.signKeyFile, "sign-key-file", "", "file with the HMAC key that signs commands")
	fs.StringVar(&c.StateDir, "state-dir", "", "directory of the Badger checkpoints (window state, offsets, judge state); empty: state in memory only, a restart replays from the committed offsets and loses the judges' evidence")
	dur(&c.CheckpointInterval, "checkpoint-interval", "time between a partition's checkpoints; offsets are committed only with a checkpoint")
	fs.StringVar(&c.StateTopic, "state-topic", c.StateTopic, "compacted topic that hands a revoked partition's checkpoint to its next owner (with --state-dir), and holds stage 2's state (with --two-stage)")
	boolean(&c.TwoStage, "two-stage", "aggregate in two stages: every instance publishes its partitions' closed windows per rollout to --partials-topic, and one instance judges each rollout (for input not keyed by rollout, such as OTLP spans keyed by trace id, read by several instances; README \"Running several instances\")")
	fs.StringVar(&c.PartialsTopic, "partials-topic", c.PartialsTopic, "topic of the closed windows that stage 1 publishes, keyed by rollout (with --two-stage)")
	fs.StringVar(&c.AdvertiseURL, "advertise-url", "", "this instance's HTTP API as the other instances reach it, e.g. http://$(POD_IP):8080 (with --two-stage they forward calls about the rollouts judged here; default: the host name and the --http port)")
	fs.Var((*int32Value)(&c.PartialsPartitions), "partials-partitions", "partitions of --partials-topic when canaryd creates it: stage 2 spreads over at most that many instances")
	dur(&c.EvictAfter, "evict-after", "drop a rollout's partition state this long (event time) after its last event, and its export history and metric series this long after its final verdict")
	fs.Var((*intValue)(&c.HistoryWindows), "history-windows", "closed windows per rollout kept for the Arrow export (older ones are folded into one row per series)")
	dur(&c.ShutdownTimeout, "shutdown-timeout", "after SIGTERM, exit within this long whatever the broker does, logging what could not be flushed")
	dur(&c.SpecsPoll, "specs-poll", "how often the spec file or directory is looked at for changes (also read again on SIGHUP)")
	fs.StringVar(&r.logLevel, "log-level", r.logLevel, "log level: debug, info, warn or error")
	boolean(&r.verbose, "v", "debug logging (same as --log-level debug)")
	securityFlags(fs, &r.sec)
	withEnvUsage(fs)
	return fs, r
}

// parseRun parses run's flags after the environment and checks the values
// no default could make sense of. It prints help to stdout.
func parseRun(args []string, environ []string, lookup func(string) (string, bool), stdout io.Writer) (*runFlags, []string, error) {
	fs, r := newRunFlags()
	if err := applyEnv(fs, lookup); err != nil {
		return nil, nil, fmt.Errorf("run: %w", err)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, runUsage)
			fs.SetOutput(stdout)
			fs.PrintDefaults()
			return nil, nil, err
		}
		return nil, nil, fmt.Errorf("run: %w (see canaryd run --help)", err)
	}
	if fs.NArg() > 0 {
		return nil, nil, fmt.Errorf("run: unexpected argument %q (see canaryd run --help)", fs.Arg(0))
	}
	c := &r.cfg
	errs := []error{
		positive("window", c.Window.Width),
		positive("lateness", c.Window.Lateness),
		positive("max-future", c.Window.MaxFuture),
		positive("session-timeout", c.SessionTimeout),
		positive("checkpoint-interval", c.CheckpointInterval),
		positive("evict-after", c.EvictAfter),
		positive("shutdown-timeout", c.ShutdownTimeout),
		positive("specs-poll", c.SpecsPoll),
		positive("history-windows", c.HistoryWindows),
		positive("partitions", c.Partitions),
	}
	if c.HTTPProtectReads && c.HTTPTokenFile == "" {
		errs = append(errs, errors.New("--http-protect-reads [CANARYD_HTTP_PROTECT_READS] needs --http-token-file [CANARYD_HTTP_TOKEN_FILE]"))
	}
	if (c.HTTPTLSCert == "") != (c.HTTPTLSKey == "") {
		errs = append(errs, errors.New("--http-tls-cert and --http-tls-key [CANARYD_HTTP_TLS_CERT, CANARYD_HTTP_TLS_KEY] go together"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, nil, fmt.Errorf("run: %w", err)
	}
	r.sec.Password, _ = lookup("CANARYD_SASL_PASSWORD")
	return r, unknownEnv(fs, environ), nil
}

func runCmd(ctx context.Context, args []string, stdout io.Writer) error {
	r, unknown, err := parseRun(args, os.Environ(), os.LookupEnv, stdout)
	if err != nil {
		return err
	}
	cfg := r.cfg
	for _, b := range strings.Split(r.brokers, ",") {
		if b = strings.TrimSpace(b); b != "" {
			cfg.Brokers = append(cfg.Brokers, b)
		}
	}
	if len(cfg.Brokers) == 0 {
		return errors.New("run: --brokers (or CANARYD_BROKERS) is required")
	}
	if r.specs == "" {
		return errors.New("run: --specs (or CANARYD_SPECS) is required")
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(r.logLevel)); err != nil {
		return fmt.Errorf("run: --log-level %q [CANARYD_LOG_LEVEL]: want debug, info, warn or error", r.logLevel)
	}
	if r.verbose {
		level = slog.LevelDebug
	}
	if cfg.Specs, err = detector.LoadSpecs(r.specs); err != nil {
		return err
	}
	cfg.SpecsPath = r.specs
	if r.modelsFile != "" {
		if cfg.Models, err = stream.LoadModelTable(r.modelsFile); err != nil {
			return err
		}
	}
	if r.otlpRulesFile != "" {
		rules, err := stream.LoadOTLPRules(r.otlpRulesFile)
		if err != nil {
			return err
		}
		cfg.OTLPRules = stream.NewRulesRef(rules)
	}
	if cfg.KgoOpts, err = securityOpts(r.sec); err != nil {
		return fmt.Errorf("run: %w", err)
	}
	if r.signKeyFile != "" {
		key, err := os.ReadFile(r.signKeyFile)
		if err != nil {
			return fmt.Errorf("run: --sign-key-file: %w", err)
		}
		cfg.SignKey = []byte(strings.TrimSpace(string(key)))
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	for _, name := range unknown {
		log.Warn("unknown environment variable ignored: no flag reads it", "name", name)
	}
	cfg.Logger = log
	d, err := daemon.New(cfg)
	if err != nil {
		return err
	}
	log.Info("serving HTTP", "addr", d.HTTPAddr())
	// SIGHUP reads the specs again; it never ends the process.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				log.Info("SIGHUP: reading the specs again", "path", r.specs)
				d.Reload()
			}
		}
	}()
	return d.Run(ctx)
}

func validateCmd(args []string, out io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprintln(out, "usage: canaryd validate [--models MODELS_FILE] [--otlp-rules OTLP_RULES_FILE] [--routes ROUTES_FILE] [SPEC_FILE_OR_DIR...]")
		if len(args) == 0 {
			return errors.New("validate: no spec given")
		}
		return nil
	}
	// Leading --models, --otlp-rules and --routes, in any order, then the specs.
	for len(args) > 0 {
		name, file, ok := "", "", false
		for _, n := range []string{"--models", "--otlp-rules", "--routes"} {
			if args[0] == n {
				if len(args) < 2 {
					return fmt.Errorf("validate: %s needs a file", n)
				}
				name, file, ok, args = n, args[1], true, args[2:]
			} else if f, cut := strings.CutPrefix(args[0], n+"="); cut {
				name, file, ok, args = n, f, true, args[1:]
			}
			if ok {
				break
			}
		}
		if !ok {
			break
		}
		if name == "--routes" {
			m, err := route.CheckRoutes(file)
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "%s: %s: ok\n", file, m)
			continue
		}
		if name == "--models" {
			t, err := stream.LoadModelTable(file)
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "%s: %d models: ok\n", file, len(t.Models()))
			continue
		}
		r, err := stream.LoadOTLPRules(file)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "%s: %s: ok\n", file, r)
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
			mode := ""
			if s.JudgeOnly() {
				mode = ", mode judge (a controller sets the weights)"
				if len(steps) == 0 {
					steps = []string{"the controller's"}
				}
			}
			fmt.Fprintf(out, "%s:%d: rollout %s: %s → %s, steps %s, alpha %g, units %s%s: ok\n", s.File, s.Line, s.Rollout, s.Baseline, s.Canary, strings.Join(steps, " → "), s.Alpha, s.Units, mode)
		}
	}
	return nil
}
