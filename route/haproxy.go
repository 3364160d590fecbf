package route

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// HAProxy puts Targets in force through HAProxy's runtime API (the stats
// socket, which must be declared "level admin"): each route names a backend
// and its two `server` lines, and Apply sets their weights with
// `set weight <backend>/<server> <w>`, the canary's to CanaryWeight and the
// baseline's to 100 − CanaryWeight, then reads them back.
//
// What weight 0 means: HAProxy's load balancing no longer picks the server
// for new requests (the tests measure exactly 0 answers from it), but
// persistence (a `cookie` on the server, stick tables, `force-persist`) can
// still send it the requests it pins, and requests already in flight finish.
// Routes whose backends use persistence are not split by weight alone.
//
// Weights set through the runtime API live in the running process only: a
// reload or restart brings back the weights of the configuration file unless
// HAProxy keeps them with `server-state-file` / `load-server-state-from-file`.
// The Driver re-applies only on the next command, so configure a state file
// where reloads happen.
//
// Each command is sent on its own connection (HAProxy answers one command
// and closes a non-interactive connection), with a deadline of
// HAProxyConfig.Timeout or the context's, whichever comes first. HAProxy does
// not lock between commands: Apply assumes it is the only writer of the two
// servers' weights.
type HAProxy struct {
	cfg    HAProxyConfig
	routes map[string]HAProxyRoute
	log    *slog.Logger
}

var _ Adapter = (*HAProxy)(nil)

// DefaultHAProxyTimeout bounds each runtime API command (dial, write, read)
// when HAProxyConfig.Timeout is 0.
const DefaultHAProxyTimeout = 2 * time.Second

// HAProxyConfig is how to reach HAProxy's runtime API; one per adapter.
type HAProxyConfig struct {
	// Address is the stats socket: an absolute unix socket path
	// ("/run/haproxy/admin.sock") or a TCP "host:port". The socket must be
	// declared "level admin" (set weight is refused at level user and
	// operator).
	Address string `yaml:"address"`
	// Timeout bounds each command: dial, write and read of the answer.
	// 0 means DefaultHAProxyTimeout.
	Timeout time.Duration `yaml:"timeout"`
}

// Validate checks the config; its errors name the bad field.
func (c HAProxyConfig) Validate() error {
	switch {
	case c.Address == "":
		return errors.New("haproxy: address is required (a unix socket path or host:port of the stats socket)")
	case strings.HasPrefix(c.Address, "/"):
	default:
		host, port, err := net.SplitHostPort(c.Address)
		if err != nil {
			return fmt.Errorf("haproxy: address %q is neither an absolute unix socket path nor host:port: %w", c.Address, err)
		}
		if host == "" {
			return fmt.Errorf("haproxy: address %q has no host", c.Address)
		}
		if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
			return fmt.Errorf("haproxy: address %q: port %q is not a number in 1..65535", c.Address, port)
		}
	}
	if c.Timeout < 0 {
		return fmt.Errorf("haproxy: timeout %v is negative", c.Timeout)
	}
	return nil
}

// HAProxyRoute is one rollout's route: a backend and the names of its two
// `server` lines.
//
//	haproxy: {backend: support_agent, baseline_server: v1, canary_server: v2}
type HAProxyRoute struct {
	Backend        string `yaml:"backend"`
	BaselineServer string `yaml:"baseline_server"`
	CanaryServer   string `yaml:"canary_server"`
}

// Validate checks the route; its errors name the bad field. Names are
// limited to the characters HAProxy allows in proxy and server names, which
// also keeps a name from carrying a second runtime API command (";", a
// newline).
func (r HAProxyRoute) Validate() error {
	for _, f := range []struct{ field, v string }{
		{"backend", r.Backend},
		{"baseline_server", r.BaselineServer},
		{"canary_server", r.CanaryServer},
	} {
		if err := checkHAProxyName(f.v); err != nil {
			return fmt.Errorf("haproxy: %s: %w", f.field, err)
		}
	}
	if r.BaselineServer == r.CanaryServer {
		return fmt.Errorf("haproxy: baseline_server and canary_server are both %q; they must be two servers", r.BaselineServer)
	}
	return nil
}

func checkHAProxyName(s string) error {
	if s == "" {
		return errors.New("is required")
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '-' || c == '_' || c == '.' || c == ':') {
			return fmt.Errorf("%q has %q; HAProxy names use letters, digits, '-', '_', '.' and ':'", s, c)
		}
	}
	return nil
}

// NewHAProxy returns the adapter for the routes (keyed by rollout). It
// checks cfg and every route, and does not contact HAProxy: a runtime API
// that is down at start is the Driver's to retry. A nil logger discards.
func NewHAProxy(cfg HAProxyConfig, routes map[string]HAProxyRoute, logger *slog.Logger) (*HAProxy, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultHAProxyTimeout
	}
	rs := make(map[string]HAProxyRoute, len(routes))
	for rollout, r := range routes {
		if rollout == "" {
			return nil, errors.New("haproxy: a route has an empty rollout name")
		}
		if err := r.Validate(); err != nil {
			return nil, fmt.Errorf("route %q: %w", rollout, err)
		}
		rs[rollout] = r
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &HAProxy{cfg: cfg, routes: rs, log: logger}, nil
}

// Kind is "haproxy".
func (h *HAProxy) Kind() string { return "haproxy" }

// Apply sets the weights of t.Rollout's two servers and returns nil once
// both read back as set.
//
// Before writing it lists the backend's servers (`show servers state`) and
// refuses, with a permanent error and nothing written, an unknown backend or
// server and a backend where a third server can take traffic (weight above 0
// and not in maintenance). It writes the canary's weight first, so a failure
// half-way leaves the canary at most the traffic it had before and the
// baseline serving; the one exception is a rollback while the baseline is at
// weight 0 (after a promote), where writing the canary's 0 first would leave
// no server for a moment: the baseline's 100 goes first, which already cuts
// the canary's share. When HAProxy refuses the second write (a static
// balancing algorithm), the first is undone.
func (h *HAProxy) Apply(ctx context.Context, t Target) error {
	r, ok := h.routes[t.Rollout]
	if !ok {
		return Permanent(fmt.Errorf("haproxy: rollout %q: %w", t.Rollout, ErrUnknownRollout))
	}
	if t.CanaryWeight < 0 || t.CanaryWeight > 100 {
		return Permanentf("haproxy: rollout %q: canary weight %d is outside 0..100", t.Rollout, t.CanaryWeight)
	}
	start := time.Now()
	cur, err := h.servers(ctx, r)
	if err != nil {
		return fmt.Errorf("haproxy: rollout %q: %w", t.Rollout, err)
	}
	canary := haproxyWrite{server: r.CanaryServer, from: cur.canary.weight, to: t.CanaryWeight}
	baseline := haproxyWrite{server: r.BaselineServer, from: cur.baseline.weight, to: 100 - t.CanaryWeight}
	first, second := haproxyWriteOrder(canary, baseline)
	if err := h.write(ctx, r.Backend, first, second); err != nil {
		return fmt.Errorf("haproxy: rollout %q: %w", t.Rollout, err)
	}
	for _, w := range []haproxyWrite{canary, baseline} {
		got, err := h.getWeight(ctx, r.Backend, w.server)
		if err != nil {
			return fmt.Errorf("haproxy: rollout %q: read back: %w", t.Rollout, err)
		}
		if got != w.to {
			// Someone else wrote in between (or HAProxy clamped it): retrying
			// writes it again.
			return fmt.Errorf("haproxy: rollout %q: %s/%s reads back weight %d after set weight %d", t.Rollout, r.Backend, w.server, got, w.to)
		}
	}
	// The weights are set, but a server in maintenance takes no traffic
	// whatever its weight: the split is not in force until an operator
	// brings it back, so this is worth retrying.
	for _, s := range []struct {
		st haproxyServer
		to int
	}{{cur.canary, canary.to}, {cur.baseline, baseline.to}} {
		if s.to > 0 && s.st.maintenance() {
			return fmt.Errorf("haproxy: rollout %q: weights set, but %s/%s is in maintenance (admin state %#x) and takes no traffic", t.Rollout, r.Backend, s.st.name, s.st.admin)
		}
	}
	h.log.Info("haproxy weights applied", "rollout", t.Rollout, "backend", r.Backend,
		"canary", r.CanaryServer, "canary_weight", canary.to, "baseline", r.BaselineServer,
		"baseline_weight", baseline.to, "seq", t.Seq, "took", time.Since(start))
	return nil
}

// haproxyWrite is one `set weight`: the server's weight before and after.
type haproxyWrite struct {
	server   string
	from, to int
}

// haproxyWriteOrder returns the canary's write first, so that a failure half-way
// leaves the canary at most the traffic it had before (when its weight goes
// down) or at most its new share (when it goes up), and the baseline
// serving. Going to 0 while the baseline is at 0 (a rollback after a
// promote), canary first would leave both servers at 0 and every request
// without a server (HAProxy answers 503) until the second write: there the
// baseline's write goes first, which cuts the canary's share as well.
func haproxyWriteOrder(canary, baseline haproxyWrite) (first, second haproxyWrite) {
	if canary.to == 0 && baseline.from == 0 && baseline.to > 0 {
		return baseline, canary
	}
	return canary, baseline
}

// write does first then second; when HAProxy refuses second, it puts first
// back so nothing is left half-applied.
func (h *HAProxy) write(ctx context.Context, backend string, first, second haproxyWrite) error {
	if err := h.setWeight(ctx, backend, first.server, first.to); err != nil {
		return err
	}
	err := h.setWeight(ctx, backend, second.server, second.to)
	if err == nil || !IsPermanent(err) || first.from == first.to {
		// A connection error leaves only the first write done, which the
		// write order makes harmless; the retry completes it.
		return err
	}
	if uerr := h.setWeight(ctx, backend, first.server, first.from); uerr != nil {
		return errors.Join(err, fmt.Errorf("undo %s/%s back to weight %d: %w", backend, first.server, first.from, uerr))
	}
	return fmt.Errorf("%w; %s/%s put back to weight %d", err, backend, first.server, first.from)
}

func (h *HAProxy) setWeight(ctx context.Context, backend, server string, w int) error {
	cmd := fmt.Sprintf("set weight %s/%s %d", backend, server, w)
	out, err := h.command(ctx, cmd)
	if err != nil {
		return err
	}
	if out != "" {
		return haproxyRefusal(cmd, out)
	}
	return nil
}

// getWeight reads the server's current weight; HAProxy answers
// "N (initial M)".
func (h *HAProxy) getWeight(ctx context.Context, backend, server string) (int, error) {
	cmd := fmt.Sprintf("get weight %s/%s", backend, server)
	out, err := h.command(ctx, cmd)
	if err != nil {
		return 0, err
	}
	f, _, _ := strings.Cut(out, " ")
	w, perr := strconv.Atoi(f)
	if perr != nil || !strings.Contains(out, "(initial ") {
		return 0, haproxyRefusal(cmd, out)
	}
	return w, nil
}

// haproxyRefusal turns an answer HAProxy gave instead of the expected one into an
// error. HAProxy's refusals (no such backend or server, permission denied,
// static balancing algorithm, bad weight) come from its configuration, so
// retrying the same command gets the same answer: they are permanent.
func haproxyRefusal(cmd, out string) error {
	var hint string
	switch {
	case strings.HasPrefix(out, "Permission denied"):
		hint = " (the stats socket must be declared \"level admin\")"
	case strings.HasPrefix(out, "Backend is using a static LB algorithm"):
		hint = " (weights other than 0 and the configured one need a dynamic balance algorithm: roundrobin, leastconn, random, or hash-type consistent)"
	}
	return Permanentf("%s: HAProxy answered %q%s", cmd, out, hint)
}

// haproxyServer is one row of `show servers state`.
type haproxyServer struct {
	name   string
	weight int // srv_uweight: the weight set by configuration or set weight
	admin  int // srv_admin_state flags
}

// HAProxy's SRV_ADMF_* maintenance flags: forced (set server state maint),
// inherited from a tracked server, from the configuration ("disabled"), and
// from a failed DNS resolution. Drain (0x08, 0x10) is not maintenance: a
// drained server still serves the requests persistence pins to it.
const haproxyMaintFlags = 0x01 | 0x02 | 0x04 | 0x20

func (s haproxyServer) maintenance() bool { return s.admin&haproxyMaintFlags != 0 }

type haproxyState struct {
	baseline, canary haproxyServer
}

// servers lists the route's backend and checks it has the two named servers
// and no third one that can take traffic.
func (h *HAProxy) servers(ctx context.Context, r HAProxyRoute) (haproxyState, error) {
	cmd := "show servers state " + r.Backend
	out, err := h.command(ctx, cmd)
	if err != nil {
		return haproxyState{}, err
	}
	if strings.HasPrefix(out, "Can't find backend") {
		return haproxyState{}, Permanentf("backend %q does not exist (HAProxy answered %q)", r.Backend, out)
	}
	rows, err := parseHAProxyServersState(out)
	if err != nil {
		return haproxyState{}, Permanent(fmt.Errorf("%s: %w", cmd, err))
	}
	var st haproxyState
	var found, names []string
	var live []string
	for _, s := range rows {
		names = append(names, s.name)
		switch s.name {
		case r.BaselineServer:
			st.baseline = s
			found = append(found, s.name)
		case r.CanaryServer:
			st.canary = s
			found = append(found, s.name)
		default:
			if s.weight > 0 && !s.maintenance() {
				live = append(live, fmt.Sprintf("%s (weight %d)", s.name, s.weight))
			}
		}
	}
	for _, want := range []string{r.BaselineServer, r.CanaryServer} {
		if !slices.Contains(found, want) {
			return haproxyState{}, Permanentf("backend %q has no server %q (its servers: %s)", r.Backend, want, strings.Join(names, ", "))
		}
	}
	if len(live) > 0 {
		return haproxyState{}, Permanentf("backend %q must have exactly one baseline server (%q) and one canary server (%q) that take traffic, but also has %s: set its weight to 0 or put it in maintenance",
			r.Backend, r.BaselineServer, r.CanaryServer, strings.Join(live, ", "))
	}
	return st, nil
}

// parseHAProxyServersState reads the answer to `show servers state <backend>`:
// a format version line ("1"), a "# " header naming the columns, then one
// row per server. Columns are found by name so added columns do not matter.
func parseHAProxyServersState(out string) ([]haproxyServer, error) {
	lines := strings.Split(out, "\n")
	if len(lines) < 2 || strings.TrimSpace(lines[0]) != "1" || !strings.HasPrefix(lines[1], "# ") {
		return nil, fmt.Errorf("unexpected answer %q (want format version 1 and a header)", haproxyFirstLine(out))
	}
	col := map[string]int{}
	for i, name := range strings.Fields(strings.TrimPrefix(lines[1], "# ")) {
		col[name] = i
	}
	need := []string{"srv_name", "srv_admin_state", "srv_uweight"}
	for _, n := range need {
		if _, ok := col[n]; !ok {
			return nil, fmt.Errorf("header has no %s column: %q", n, lines[1])
		}
	}
	var rows []haproxyServer
	for _, line := range lines[2:] {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) <= max(col["srv_name"], col["srv_admin_state"], col["srv_uweight"]) {
			return nil, fmt.Errorf("short row %q", line)
		}
		admin, err1 := strconv.Atoi(f[col["srv_admin_state"]])
		weight, err2 := strconv.Atoi(f[col["srv_uweight"]])
		if err := errors.Join(err1, err2); err != nil {
			return nil, fmt.Errorf("row %q: %w", line, err)
		}
		rows = append(rows, haproxyServer{name: f[col["srv_name"]], weight: weight, admin: admin})
	}
	return rows, nil
}

func haproxyFirstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

// maxHAProxyAnswer caps what one command's answer may be (a backend with
// thousands of servers lists well under this).
const maxHAProxyAnswer = 4 << 20

// command sends one command on its own connection and returns HAProxy's
// answer without the trailing empty line. Dial and I/O failures are
// retriable (HAProxy restarting, a timeout), except a socket file the
// process may not open, which needs a configuration change.
func (h *HAProxy) command(ctx context.Context, cmd string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, h.cfg.Timeout)
	defer cancel()
	network := "tcp"
	if strings.HasPrefix(h.cfg.Address, "/") {
		network = "unix"
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, h.cfg.Address)
	if err != nil {
		if errors.Is(err, os.ErrPermission) || errors.Is(err, syscall.EACCES) {
			return "", Permanent(fmt.Errorf("runtime API %s: %w (canaryd's user may not open the stats socket)", h.cfg.Address, err))
		}
		return "", fmt.Errorf("runtime API %s: %w", h.cfg.Address, err)
	}
	defer conn.Close()
	// The context (with the command timeout) covers the whole exchange:
	// once it is done, the connection's deadline ends a write or read that
	// is waiting, and haproxyCtxErr reports the context's error.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	start := time.Now()
	if _, err := io.WriteString(conn, cmd+"\n"); err != nil {
		return "", fmt.Errorf("runtime API %s: %s: %w", h.cfg.Address, cmd, haproxyCtxErr(ctx, err))
	}
	b, err := io.ReadAll(io.LimitReader(bufio.NewReader(conn), maxHAProxyAnswer))
	if err != nil {
		return "", fmt.Errorf("runtime API %s: %s: %w", h.cfg.Address, cmd, haproxyCtxErr(ctx, err))
	}
	// Every answer ends with a newline (a successful set weight is just
	// "\n"): without it the connection was closed before HAProxy answered.
	if len(b) == 0 || b[len(b)-1] != '\n' {
		return "", fmt.Errorf("runtime API %s: %s: connection closed before the answer ended (got %q)", h.cfg.Address, cmd, haproxyFirstLine(string(b)))
	}
	out := strings.TrimRight(string(b), "\n")
	h.log.Debug("haproxy command", "cmd", cmd, "answer", haproxyFirstLine(out), "took", time.Since(start))
	return out, nil
}

// haproxyCtxErr prefers the context's error (deadline, cancel) to the i/o timeout
// its deadline caused.
func haproxyCtxErr(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("%w (%w)", cerr, err)
	}
	return err
}
