package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/inferensys/canaryd/detector"
)

// The client commands (status, wait) read canaryd's HTTP API
// (api/openapi.yaml).

// Defaults of the client commands.
const (
	defaultServer      = "http://localhost:8080"
	defaultWaitTimeout = time.Hour
	defaultWaitPoll    = 2 * time.Second
	// requestTimeout bounds one HTTP request of a client command.
	requestTimeout = 10 * time.Second
)

// clientEnv are the variables of the client commands' connection flags
// (the other flags have none: a CANARYD_TIMEOUT meant for one pipeline
// step must not change another's wait).
var clientEnv = map[string]string{
	"server":     "CANARYD_SERVER",
	"token-file": "CANARYD_TOKEN_FILE",
	"ca-file":    "CANARYD_CA_FILE",
}

// clientFlags are the connection flags of the client commands.
type clientFlags struct {
	server, tokenFile, caFile string
}

// addClientFlags defines --server, --token-file and --ca-file on fs, with
// defaults from their environment variables.
func addClientFlags(fs *flag.FlagSet, lookup func(string) (string, bool)) *clientFlags {
	c := &clientFlags{server: defaultServer}
	env := func(p *string, name string) {
		if v, ok := lookup(clientEnv[name]); ok && v != "" {
			*p = v
		}
	}
	env(&c.server, "server")
	env(&c.tokenFile, "token-file")
	env(&c.caFile, "ca-file")
	fs.StringVar(&c.server, "server", c.server, "canaryd's HTTP API, http://HOST:PORT or https://HOST:PORT [CANARYD_SERVER]")
	fs.StringVar(&c.tokenFile, "token-file", c.tokenFile, "file with the bearer token, for a server run with --http-protect-reads [CANARYD_TOKEN_FILE]")
	fs.StringVar(&c.caFile, "ca-file", c.caFile, "PEM bundle of the CAs that sign an https:// server's certificate (default: the system roots) [CANARYD_CA_FILE]")
	return c
}

// apiClient reads canaryd's HTTP API.
type apiClient struct {
	base      string // scheme://host[:port][/prefix], no trailing slash
	tokenFile string
	hc        *http.Client
}

// client checks the flags and returns the client they describe.
func (c *clientFlags) client() (*apiClient, error) {
	server := c.server
	if !strings.Contains(server, "://") {
		server = "http://" + server
	}
	u, err := url.Parse(server)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("--server %q: want http://HOST:PORT or https://HOST:PORT", c.server)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if c.caFile != "" {
		if u.Scheme != "https" {
			return nil, fmt.Errorf("--ca-file is for an https:// server; --server is %s", server)
		}
		pem, err := os.ReadFile(c.caFile)
		if err != nil {
			return nil, fmt.Errorf("--ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ca-file %s: no PEM certificate in it", c.caFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	if c.tokenFile != "" {
		if _, err := readClientToken(c.tokenFile); err != nil {
			return nil, err
		}
	}
	return &apiClient{base: strings.TrimRight(u.String(), "/"), tokenFile: c.tokenFile, hc: &http.Client{Transport: tr}}, nil
}

// readClientToken reads a bearer token from file: its first line that is
// not blank or a # comment, trimmed; of a "NAME TOKEN" line (the server's
// token file format) the token.
func readClientToken(file string) (string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("--token-file: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		return f[len(f)-1], nil
	}
	return "", fmt.Errorf("--token-file %s: no token in it", file)
}

// apiError is an answer of the server other than 200.
type apiError struct {
	code int
	msg  string // the reply's "error", or its text
}

func (e *apiError) Error() string {
	return fmt.Sprintf("%d %s: %s", e.code, http.StatusText(e.code), e.msg)
}

// errUnreachable wraps a request that got no answer.
var errUnreachable = errors.New("server unreachable")

// get fetches path and returns its body; a reply other than 200 is an
// *apiError, no reply wraps errUnreachable. The token file is read at each
// request, so a rotated token is used by a long wait.
func (c *apiClient) get(ctx context.Context, path string) ([]byte, error) {
	return c.do(ctx, "GET", path, nil)
}

// post sends body (JSON) to path, as get does.
func (c *apiClient) post(ctx context.Context, path string, body []byte) ([]byte, error) {
	return c.do(ctx, "POST", path, body)
}

func (c *apiClient) do(ctx context.Context, method, path string, body []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.tokenFile != "" {
		tok, err := readClientToken(c.tokenFile)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errUnreachable, err)
	}
	defer resp.Body.Close()
	reply, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", errUnreachable, c.base+path, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		msg := strings.TrimSpace(string(reply))
		if json.Unmarshal(reply, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		if len(msg) > 300 {
			msg = msg[:300] + "…"
		}
		return nil, &apiError{code: resp.StatusCode, msg: msg}
	}
	return reply, nil
}

// rolloutStatus is a rollout's status as the API serves it: detector.Status
// and the fields a newer server adds (read when present).
type rolloutStatus struct {
	detector.Status
	// Phase of the control plane (running, paused, awaiting approval, ...).
	Phase string `json:"phase,omitempty"`
}

func (c *apiClient) rollout(ctx context.Context, id string) (rolloutStatus, []byte, error) {
	var st rolloutStatus
	body, err := c.get(ctx, "/v1/rollouts/"+url.PathEscape(id))
	if err != nil {
		return st, nil, err
	}
	if err := json.Unmarshal(body, &st); err != nil {
		return st, nil, fmt.Errorf("%s/v1/rollouts/%s: %w", c.base, id, err)
	}
	return st, body, nil
}

func (c *apiClient) rollouts(ctx context.Context) ([]rolloutStatus, []byte, error) {
	var list struct {
		Rollouts []rolloutStatus `json:"rollouts"`
	}
	body, err := c.get(ctx, "/v1/rollouts")
	if err != nil {
		return nil, nil, err
	}
	if err := json.Unmarshal(body, &list); err != nil {
		return nil, nil, fmt.Errorf("%s/v1/rollouts: %w", c.base, err)
	}
	return list.Rollouts, body, nil
}

// phase is the rollout's phase: the server's when it says, otherwise what
// the status shows.
func (s *rolloutStatus) phase() string {
	switch {
	case s.Phase != "":
		return s.Phase
	case s.Final == "promote":
		return "promoted"
	case s.Final == "rollback":
		return "rolled back"
	case s.Final == "hold":
		return "held"
	case s.Final != "":
		return s.Final
	case s.Step < 0:
		return "pending"
	}
	return "running"
}

// release names the release: canary version and deployment id, if any.
func (s *rolloutStatus) release() string {
	r := s.Canary
	if s.DeploymentID != "" {
		r += " (deployment " + s.DeploymentID + ")"
	}
	return r
}

// stepText is "2/3", or "-" before the first step.
func (s *rolloutStatus) stepText() string {
	if s.Step < 0 {
		return "-"
	}
	return fmt.Sprintf("%d/%d", min(s.Step+1, s.Steps), s.Steps)
}

// parseInterleaved parses fs from args, allowing flags after positional
// arguments (canaryd wait ROLLOUT --timeout 10m), and returns the
// positional arguments. "--" ends the flags.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}
