package sink

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/inferensys/canaryd/detector"
)

// RulesSource is what a StatusSource also implements when it maps OTLP
// telemetry to rollouts: /v1/rollouts then shows the rules in force and how
// many events each rule resolved.
type RulesSource interface {
	OTLPRules() *OTLPRulesInfo // nil: no OTLP input
}

// OTLPRulesInfo is the OTLP mapping in force: the rules' text (attribute
// keys in order, per field) and, per signal and field, how many events
// each rule resolved ("trace": joined to their trace's version; "none":
// unresolved).
type OTLPRulesInfo struct {
	Rules    string                                  `json:"rules"`
	File     string                                  `json:"file,omitempty"`
	Resolved map[string]map[string]map[string]uint64 `json:"resolved"` // signal → field → rule → events
}

// StatusSource is what the HTTP API reads rollouts from.
type StatusSource interface {
	// Statuses returns every rollout's state, sorted by rollout.
	Statuses() []detector.Status
	// Status returns one rollout's state.
	Status(rollout string) (detector.Status, bool)
}

// WindowSource is what the Arrow export reads a rollout's windows from.
type WindowSource interface {
	// WriteWindows writes the rollout's windows as an Arrow IPC stream and
	// reports false for an unknown rollout.
	WriteWindows(w io.Writer, rollout string) (bool, error)
}

// APIVersion is the version of the JSON API's rollout documents
// (/v1/rollouts and /v1/rollouts/{id}, each status's api_version): a
// change that removes or renames a field, or changes what one holds,
// gets a new version; added fields do not.
const APIVersion = "canaryd/v1"

// ArrowStreamType is the media type of the Arrow export.
const ArrowStreamType = "application/vnd.apache.arrow.stream"

// Access is who may call a route.
type Access int

const (
	// Probe routes (/healthz, /readyz) are always open: kubelets and load
	// balancers carry no token.
	Probe Access = iota
	// Read routes are open unless ProtectReads.
	Read
	// Write routes change state: they need a bearer token, and are off
	// without a token file (TokenFile).
	Write
)

func (a Access) String() string {
	switch a {
	case Probe:
		return "probe"
	case Read:
		return "read"
	case Write:
		return "write"
	}
	return fmt.Sprintf("Access(%d)", int(a))
}

// Route is one endpoint of the HTTP API: Method and Path in
// http.ServeMux's pattern syntax, which for these paths is also OpenAPI's.
type Route struct {
	Method, Path string
	Access       Access
}

// routes is the HTTP API: Handler registers exactly these, and
// api/openapi.yaml documents exactly these (TestOpenAPIRoutes).
var routes = []Route{
	{"GET", "/metrics", Read},
	{"GET", "/healthz", Probe},
	{"GET", "/readyz", Probe},
	{"GET", "/v1/rollouts", Read},
	{"GET", "/v1/rollouts/{id}", Read},
	{"GET", "/v1/rollouts/{id}/windows", Read},
	{"GET", "/v1/rollouts/{id}/history", Read},
	{"POST", "/v1/rollouts/{id}/{action}", Write},
	// Delivery controllers' calls (controllers.go): they declare what the
	// controller did to judge-mode rollouts and read the gate. Open like
	// reads, because Flagger's webhooks cannot carry a token.
	{"GET", "/v1/rollouts/{id}/judge", Read},
	{"POST", "/v1/rollouts/{id}/judge", Read},
	{"POST", "/v1/flagger/{hook}", Read},
	// The status page (ui.go) and its files. "/" is registered as "/{$}",
	// which matches "/" only, so that other paths stay 404s.
	{"GET", "/", Read},
	{"GET", "/ui/{file}", Read},
}

// Routes returns the endpoints of the HTTP API.
func Routes() []Route { return slices.Clone(routes) }

// Server serves the HTTP API (Routes) over HTTP or, with TLSFiles, HTTPS.
type Server struct {
	srv *http.Server
	ln  net.Listener
	tls *certFiles // nil: plain HTTP
}

// NewServer listens on addr (":0" picks a free port) and returns a server
// that Serve runs. ready reports whether canaryd is ready (nil = ready).
// It reads the token file and the TLS files (if configured) before it
// listens, and starts no goroutine.
func NewServer(addr string, src StatusSource, ms *metrics.Set, ready func() error, opts ...ServerOpt) (*Server, error) {
	cfg := defaultServerCfg()
	for _, o := range opts {
		o(&cfg)
	}
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("http: %w", err)
	}
	h, err := newHandler(src, ms, ready, &cfg)
	if err != nil {
		return nil, err
	}
	s := &Server{srv: &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second,
		ErrorLog: slog.NewLogLogger(cfg.log.Handler(), slog.LevelWarn)}}
	if cfg.tlsCert != "" {
		if s.tls, err = newCertFiles(cfg.tlsCert, cfg.tlsKey, cfg.log); err != nil {
			return nil, fmt.Errorf("http: %w", err)
		}
		s.srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: s.tls.getCertificate}
	}
	if s.ln, err = net.Listen("tcp", addr); err != nil {
		return nil, fmt.Errorf("http listen %s: %w", addr, err)
	}
	return s, nil
}

// Addr returns the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Serve serves until ctx is done, then shuts down gracefully. It runs one
// goroutine, the http.Server's accept loop, and returns after it ended.
func (s *Server) Serve(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() {
		if s.tls != nil {
			errc <- s.srv.ServeTLS(s.ln, "", "") // certificates from TLSConfig.GetCertificate
			return
		}
		errc <- s.srv.Serve(s.ln)
	}()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.srv.Shutdown(sctx)
	if e := <-errc; !errors.Is(e, http.ErrServerClosed) {
		err = errors.Join(err, e)
	}
	return err
}

// Handler returns canaryd's HTTP handler with the default settings: reads
// open, mutating endpoints off.
func Handler(src StatusSource, ms *metrics.Set, ready func() error) http.Handler {
	h, err := NewHandler(src, ms, ready)
	if err != nil {
		panic("BUG: the default HTTP handler cannot fail: " + err.Error())
	}
	return h
}

// NewHandler returns canaryd's HTTP handler configured by opts (TLSFiles
// is ignored: that is the Server's). It reads the token file, if any.
func NewHandler(src StatusSource, ms *metrics.Set, ready func() error, opts ...ServerOpt) (http.Handler, error) {
	cfg := defaultServerCfg()
	for _, o := range opts {
		o(&cfg)
	}
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("http: %w", err)
	}
	return newHandler(src, ms, ready, &cfg)
}

func newHandler(src StatusSource, ms *metrics.Set, ready func() error, cfg *serverCfg) (http.Handler, error) {
	if ms == nil {
		ms = metrics.NewSet()
	}
	ref := refuser{ms}
	auth, err := NewAuth(cfg.tokenFile, ms, cfg.log)
	if err != nil {
		return nil, fmt.Errorf("http: %w", err)
	}
	notFound := func(w http.ResponseWriter, id string) {
		ref.refuse(w, http.StatusNotFound, "unknown_rollout", "no rollout "+quoteID(id))
	}
	handlers := map[string]http.HandlerFunc{
		"GET /metrics": func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/plain; version=0.0.4")
			WriteMetrics(w, ms)
		},
		"GET /healthz": func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprintln(w, "ok")
		},
		"GET /readyz": func(w http.ResponseWriter, _ *http.Request) {
			if ready != nil {
				if err := ready(); err != nil {
					http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
					return
				}
			}
			fmt.Fprintln(w, "ready")
		},
		"GET /v1/rollouts": func(w http.ResponseWriter, _ *http.Request) {
			out := map[string]any{"api_version": APIVersion, "rollouts": src.Statuses()}
			if rs, ok := src.(RulesSource); ok {
				if r := rs.OTLPRules(); r != nil {
					out["otlp_rules"] = r
				}
			}
			writeJSON(w, http.StatusOK, out)
		},
		"GET /v1/rollouts/{id}": func(w http.ResponseWriter, r *http.Request) {
			st, ok := src.Status(r.PathValue("id"))
			if !ok {
				notFound(w, r.PathValue("id"))
				return
			}
			writeJSON(w, http.StatusOK, struct {
				APIVersion string `json:"api_version"`
				detector.Status
			}{APIVersion, st})
		},
		// The rollout's closed windows, one row per series-window, as an
		// Arrow IPC stream (window/columnar.md): pyarrow.ipc.open_stream
		// reads it.
		"GET /v1/rollouts/{id}/windows": func(w http.ResponseWriter, r *http.Request) {
			ws, ok := src.(WindowSource)
			if !ok {
				writeJSON(w, http.StatusNotFound, map[string]string{"error": "this server has no window export"})
				return
			}
			var buf bytes.Buffer
			found, err := ws.WriteWindows(&buf, r.PathValue("id"))
			switch {
			case err != nil:
				writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
			case !found:
				notFound(w, r.PathValue("id"))
			default:
				w.Header().Set("Content-Type", ArrowStreamType)
				w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
				_, _ = w.Write(buf.Bytes())
			}
		},
		// The rollout's recent verdicts (HistorySource), oldest first: what
		// the status page plots.
		"GET /v1/rollouts/{id}/history": func(w http.ResponseWriter, r *http.Request) {
			hs, ok := src.(HistorySource)
			if !ok {
				writeJSON(w, http.StatusNotFound, map[string]string{"error": "this server keeps no verdict history"})
				return
			}
			h, found := hs.History(r.PathValue("id"))
			if !found {
				notFound(w, r.PathValue("id"))
				return
			}
			if h.Points == nil {
				h.Points = []HistoryPoint{}
			}
			if h.Events == nil {
				h.Events = []HistoryEvent{}
			}
			writeJSON(w, http.StatusOK, h)
		},
		"GET /":                           pageHandler(src),
		"GET /ui/{file}":                  assetHandler(ref),
		"POST /v1/rollouts/{id}/{action}": actionHandler(src, ref, cfg),
		"GET /v1/rollouts/{id}/judge":     judgeHandler(src, ref, cfg),
		"POST /v1/rollouts/{id}/judge":    judgeHandler(src, ref, cfg),
		"POST /v1/flagger/{hook}":         flaggerHandler(src, ref, cfg),
	}
	// A rollout judged by another instance (two-stage aggregation): its
	// endpoints answer from there (forward.go).
	if os, ok := src.(OwnerSource); ok {
		for _, p := range []string{"GET /v1/rollouts/{id}", "GET /v1/rollouts/{id}/windows", "GET /v1/rollouts/{id}/history",
			"POST /v1/rollouts/{id}/{action}", "GET /v1/rollouts/{id}/judge", "POST /v1/rollouts/{id}/judge"} {
			handlers[p] = forwardByPath(os, ref, handlers[p])
		}
		handlers["POST /v1/flagger/{hook}"] = forwardFlagger(os, ref, handlers["POST /v1/flagger/{hook}"])
	}
	off := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		ref.refuse(w, http.StatusForbidden, "actions_off",
			"this endpoint is off: canaryd serves it only with a bearer token configured (canaryd run --http-token-file FILE, or CANARYD_HTTP_TOKEN_FILE)")
	})
	mux := http.NewServeMux()
	for _, rt := range routes {
		pattern := rt.Method + " " + rt.Path
		h, ok := handlers[pattern]
		if !ok {
			panic("BUG: no handler for route " + pattern)
		}
		delete(handlers, pattern)
		if rt.Path == "/" {
			pattern += "{$}" // "/" alone: in ServeMux, "/" is every path
		}
		switch {
		case rt.Access == Write && auth == nil:
			mux.Handle(pattern, off)
		case rt.Access == Write, rt.Access == Read && cfg.protectReads:
			mux.Handle(pattern, auth.Require(h))
		default:
			mux.Handle(pattern, h)
		}
	}
	if len(handlers) > 0 {
		panic(fmt.Sprintf("BUG: handlers without a route: %v", slices.Collect(maps.Keys(handlers))))
	}
	return mux, nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// quoteID quotes a requested id for an error reply, cut to 64 bytes: a
// 70 kB URL must not come back as a 70 kB reply.
func quoteID(id string) string {
	if len(id) > 64 {
		return strconv.Quote(id[:64]) + "…"
	}
	return strconv.Quote(id)
}
