package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/inferensys/canaryd/route"
	"github.com/inferensys/canaryd/router"
	"github.com/inferensys/canaryd/sink"
)

const routeUsage = `usage: canaryd route --routes ROUTES_FILE --brokers BROKERS [flags]

Follow canaryd's control topic and put its commands in force on real routers:
HAProxy backends (runtime API), Kubernetes routes (Istio VirtualService,
Gateway API HTTPRoute, SMI TrafficSplit, by server-side apply) and Git files
(a kustomize patch that Flux or Argo CD applies), as the routes file says
(see deploy/routes.yaml). Each command is acknowledged on the acks topic once
it is in force.

Flags (each also from the environment variable in brackets):
`

// routeFlags are the flags of `canaryd route`.
type routeFlags struct {
	routes, brokers, controlTopic, acksTopic, routerID, signKeyFile, httpAddr, logLevel string
	applyTimeout, minBackoff, maxBackoff                                                time.Duration
	sec                                                                                 security
}

func newRouteFlags() (*flag.FlagSet, *routeFlags) {
	host, _ := os.Hostname()
	def := route.DefaultDriverOptions()
	r := &routeFlags{controlTopic: router.DefaultTopic, acksTopic: "canary.acks", routerID: host,
		httpAddr: "127.0.0.1:9102", logLevel: "info",
		applyTimeout: def.ApplyTimeout, minBackoff: def.MinBackoff, maxBackoff: def.MaxBackoff}
	fs := flag.NewFlagSet("route", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	dur := func(p *time.Duration, name, usage string) { fs.Var((*durationValue)(p), name, usage) }
	fs.StringVar(&r.routes, "routes", "", "routes YAML file: which route each rollout's commands set (required)")
	fs.StringVar(&r.brokers, "brokers", "", "Kafka seed brokers, comma-separated (required)")
	fs.StringVar(&r.controlTopic, "control-topic", r.controlTopic, "control topic to follow")
	fs.StringVar(&r.acksTopic, "acks-topic", r.acksTopic, "topic to acknowledge applied commands on (canaryd's --acks-topic); \"\": no acks")
	fs.StringVar(&r.routerID, "router-id", r.routerID, "this router's id in its acks (default: the host name, e.g. the pod name); keep it stable across restarts")
	fs.StringVar(&r.signKeyFile, "sign-key-file", "", "file with the HMAC key canaryd signs commands with: unsigned or badly signed commands are then refused")
	fs.StringVar(&r.httpAddr, "http", r.httpAddr, "HTTP address for /metrics, /healthz, /readyz and /v1/routes (\"\": none)")
	dur(&r.applyTimeout, "apply-timeout", "bound on one attempt to put a command in force")
	dur(&r.minBackoff, "min-backoff", "first wait before retrying a command that could not be applied (doubles up to --max-backoff)")
	dur(&r.maxBackoff, "max-backoff", "longest wait between retries")
	fs.StringVar(&r.logLevel, "log-level", r.logLevel, "log level: debug, info, warn or error")
	securityFlags(fs, &r.sec)
	withEnvUsage(fs)
	return fs, r
}

// parseRoute parses route's flags after the environment.
func parseRoute(args []string, lookup func(string) (string, bool), stdout io.Writer) (*routeFlags, error) {
	fs, r := newRouteFlags()
	if err := applyEnv(fs, lookup); err != nil {
		return nil, fmt.Errorf("route: %w", err)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, routeUsage)
			fs.SetOutput(stdout)
			fs.PrintDefaults()
			return nil, err
		}
		return nil, fmt.Errorf("route: %w (see canaryd route --help)", err)
	}
	var errs []error
	if fs.NArg() > 0 {
		errs = append(errs, fmt.Errorf("unexpected argument %q", fs.Arg(0)))
	}
	if r.routes == "" {
		errs = append(errs, errors.New("--routes [CANARYD_ROUTES] is required"))
	}
	if strings.Trim(r.brokers, ", ") == "" {
		errs = append(errs, errors.New("--brokers [CANARYD_BROKERS] is required"))
	}
	if r.acksTopic != "" && r.routerID == "" {
		errs = append(errs, errors.New("--router-id [CANARYD_ROUTER_ID] is required with --acks-topic"))
	}
	errs = append(errs, positive("apply-timeout", r.applyTimeout), positive("min-backoff", r.minBackoff), positive("max-backoff", r.maxBackoff))
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("route: %w", err)
	}
	r.sec.Password, _ = lookup("CANARYD_SASL_PASSWORD")
	return r, nil
}

func routeCmd(ctx context.Context, args []string, stdout io.Writer) error {
	r, err := parseRoute(args, os.LookupEnv, stdout)
	if err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(r.logLevel)); err != nil {
		return fmt.Errorf("route: --log-level %q [CANARYD_LOG_LEVEL]: want debug, info, warn or error", r.logLevel)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	mux, err := route.LoadRoutes(r.routes, log)
	if err != nil {
		return err // names the file and line
	}
	kopts, err := securityOpts(r.sec)
	if err != nil {
		return fmt.Errorf("route: %w", err)
	}
	var key []byte
	if r.signKeyFile != "" {
		b, err := os.ReadFile(r.signKeyFile)
		if err != nil {
			return fmt.Errorf("route: --sign-key-file: %w", err)
		}
		key = []byte(strings.TrimSpace(string(b)))
	}

	ms := metrics.NewSet()
	var sub *router.Subscriber
	d := route.NewDriver(mux, route.DriverOptions{
		Ack:          func(st router.State) { sub.Ack(st) },
		NotApplied:   func() { sub.NotApplied() },
		ApplyTimeout: r.applyTimeout, MinBackoff: r.minBackoff, MaxBackoff: r.maxBackoff,
		Logger: log, Metrics: ms,
	})
	var brokers []string
	for _, b := range strings.Split(r.brokers, ",") {
		if b = strings.TrimSpace(b); b != "" {
			brokers = append(brokers, b)
		}
	}
	opts := []router.Opt{router.Brokers(brokers...), router.Topic(r.controlTopic),
		router.ClientOpts(kopts...), router.Logger(log), router.Apply(d.Offer)}
	if key != nil {
		opts = append(opts, router.SigningKey(key))
	}
	if r.acksTopic != "" {
		opts = append(opts, router.Acks(r.acksTopic, r.routerID))
	}
	if sub, err = router.New(opts...); err != nil {
		return fmt.Errorf("route: %w", err)
	}
	defer sub.Close()
	routerMetrics(ms, sub)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if r.httpAddr != "" {
		ln, err := net.Listen("tcp", r.httpAddr)
		if err != nil {
			return fmt.Errorf("route: --http: %w", err)
		}
		srv := &http.Server{Handler: routeHandler(ms, sub, d), ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = srv.Serve(ln) }()
		defer srv.Close()
		log.Info("serving HTTP", "addr", ln.Addr().String())
	}
	driven := make(chan struct{})
	go func() { d.Run(ctx); close(driven) }()
	log.Info("following the control topic", "topic", r.controlTopic, "routes", r.routes, "acks_topic", r.acksTopic, "router_id", r.routerID)
	err = sub.Run(ctx)
	cancel()
	<-driven // the workers stop (an Apply in flight is cancelled) before the acks are flushed by Close
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("route: %w", err)
	}
	return nil
}

// routerMetrics registers the Subscriber's counters on ms, read at each
// scrape.
func routerMetrics(ms *metrics.Set, sub *router.Subscriber) {
	stat := func(f func(router.Stats) uint64) func() float64 {
		return func() float64 { return float64(f(sub.Stats())) }
	}
	ms.NewGauge(`canaryd_route_commands_total{result="applied"}`, stat(func(s router.Stats) uint64 { return s.Applied }))
	ms.NewGauge(`canaryd_route_commands_total{result="stale"}`, stat(func(s router.Stats) uint64 { return s.Stale }))
	ms.NewGauge(`canaryd_route_commands_total{result="duplicate"}`, stat(func(s router.Stats) uint64 { return s.Duplicate }))
	ms.NewGauge(`canaryd_route_commands_total{result="tombstone"}`, stat(func(s router.Stats) uint64 { return s.Tombstone }))
	for _, reason := range router.Reasons {
		ms.NewGauge(fmt.Sprintf(`canaryd_route_commands_total{result="refused",reason=%q}`, reason),
			stat(func(s router.Stats) uint64 { return s.Refused[reason] }))
	}
	ack := func(f func(router.AckStats) uint64) func() float64 {
		return func() float64 { return float64(f(sub.AckStats())) }
	}
	ms.NewGauge(`canaryd_route_acks_total{result="sent"}`, ack(func(s router.AckStats) uint64 { return s.Sent }))
	ms.NewGauge(`canaryd_route_acks_total{result="failed"}`, ack(func(s router.AckStats) uint64 { return s.Failed }))
	ms.NewGauge(`canaryd_route_acks_total{result="not_applied"}`, ack(func(s router.AckStats) uint64 { return s.NotApplied }))
}

// routeHandler serves the route command's HTTP endpoints.
func routeHandler(ms *metrics.Set, sub *router.Subscriber, d *route.Driver) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		sink.WriteMetrics(w, ms)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		select {
		case <-sub.Ready():
			io.WriteString(w, "ready\n")
		default:
			http.Error(w, "bootstrapping from the control topic", http.StatusServiceUnavailable)
		}
	})
	mux.HandleFunc("GET /v1/routes", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"routes": d.Status()})
	})
	return mux
}
