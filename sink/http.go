package sink

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/inferensys/canaryd/detector"
)

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

// ArrowStreamType is the media type of the Arrow export.
const ArrowStreamType = "application/vnd.apache.arrow.stream"

// Server serves /metrics, /healthz, /readyz, /v1/rollouts[/{id}] and, when
// the source is a WindowSource, /v1/rollouts/{id}/windows (Arrow IPC).
type Server struct {
	srv *http.Server
	ln  net.Listener
}

// NewServer listens on addr (":0" picks a free port) and returns a server
// that Serve runs. ready reports whether canaryd is ready (nil = ready).
func NewServer(addr string, src StatusSource, ms *metrics.Set, ready func() error) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("http listen %s: %w", addr, err)
	}
	return &Server{srv: &http.Server{Handler: Handler(src, ms, ready), ReadHeaderTimeout: 5 * time.Second}, ln: ln}, nil
}

// Addr returns the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Serve serves until ctx is done, then shuts down gracefully.
func (s *Server) Serve(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.ln) }()
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

// Handler returns canaryd's HTTP handler.
func Handler(src StatusSource, ms *metrics.Set, ready func() error) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		ms.WritePrometheus(w)
		metrics.WriteProcessMetrics(w)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if ready != nil {
			if err := ready(); err != nil {
				http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		fmt.Fprintln(w, "ready")
	})
	mux.HandleFunc("GET /v1/rollouts", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"rollouts": src.Statuses()})
	})
	mux.HandleFunc("GET /v1/rollouts/{id}", func(w http.ResponseWriter, r *http.Request) {
		st, ok := src.Status(r.PathValue("id"))
		if !ok {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "no rollout " + quoteID(r.PathValue("id"))})
			return
		}
		writeJSON(w, http.StatusOK, st)
	})
	if ws, ok := src.(WindowSource); ok {
		// The rollout's closed windows, one row per series-window, as an
		// Arrow IPC stream (window/columnar.md): pyarrow.ipc.open_stream
		// reads it.
		mux.HandleFunc("GET /v1/rollouts/{id}/windows", func(w http.ResponseWriter, r *http.Request) {
			var buf bytes.Buffer
			found, err := ws.WriteWindows(&buf, r.PathValue("id"))
			switch {
			case err != nil:
				writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
			case !found:
				writeJSON(w, http.StatusNotFound, map[string]string{"error": "no rollout " + quoteID(r.PathValue("id"))})
			default:
				w.Header().Set("Content-Type", ArrowStreamType)
				w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
				_, _ = w.Write(buf.Bytes())
			}
		})
	}
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// quoteID cuts a requested rollout id to 64 bytes for an error reply: a
// 70 kB URL must not come back as a 70 kB reply.
func quoteID(id string) string {
	if len(id) > 64 {
		return id[:64] + "…"
	}
	return id
}
