package sink_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/printer"
	"go/token"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/inferensys/canaryd/detector"
	"github.com/inferensys/canaryd/sink"
)

const (
	tokenA = "aaaaaaaaaaaaaaaaaaaaaaaa-0001"
	tokenB = "bbbbbbbbbbbbbbbbbbbbbbbb-0002"
)

// actSource is a StatusSource and ActionSource that records the actions it
// is asked for and answers with err.
type actSource struct {
	statuses
	mu    sync.Mutex
	calls []actCall
	err   error
}

type actCall struct {
	rollout, action string
	req             sink.ActionRequest
}

func (s *actSource) Act(_ context.Context, rollout, action string, req sink.ActionRequest) (detector.Status, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, actCall{rollout, action, req})
	if s.err != nil {
		return detector.Status{}, s.err
	}
	st, _ := s.Status(rollout)
	return st, nil
}

func (s *actSource) called() []actCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]actCall(nil), s.calls...)
}

var _ sink.ActionSource = (*actSource)(nil)

func writeFile(t *testing.T, path, content string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// call sends method path with body and token ("" = no Authorization) to h
// and returns the status code and the decoded JSON body.
func call(t *testing.T, h http.Handler, method, path, token, body string) (int, map[string]any) {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var m map[string]any
	if ct := rec.Header().Get("Content-Type"); ct == "application/json" {
		if err := json.Unmarshal(rec.Body.Bytes(), &m); err != nil {
			t.Fatalf("%s %s: body %q: %v", method, path, rec.Body.String(), err)
		}
	}
	return rec.Code, m
}

func refused(ms *metrics.Set, reason string) string {
	var buf bytes.Buffer
	ms.WritePrometheus(&buf)
	for _, line := range strings.Split(buf.String(), "\n") {
		if strings.HasPrefix(line, `canaryd_http_refused_total{reason="`+reason+`"} `) {
			return strings.TrimPrefix(line, `canaryd_http_refused_total{reason="`+reason+`"} `)
		}
	}
	return "0"
}

// TestActionsOffWithoutToken: without a token file the mutating endpoints
// answer 403 naming the flag that turns them on, whatever the request
// carries, and the source is never asked.
func TestActionsOffWithoutToken(t *testing.T) {
	src := &actSource{statuses: statuses{{Rollout: "a"}}}
	ms := metrics.NewSet()
	h, err := sink.NewHandler(src, ms, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range []string{"", tokenA} {
		code, body := call(t, h, "POST", "/v1/rollouts/a/pause", tok, `{"reason":"x"}`)
		if code != http.StatusForbidden {
			t.Errorf("POST with token %q: %d; want 403", tok, code)
		}
		if msg, _ := body["error"].(string); !strings.Contains(msg, "--http-token-file") {
			t.Errorf("403 body %v; want an error naming --http-token-file", body)
		}
	}
	if got := src.called(); len(got) != 0 {
		t.Errorf("Act called %d times; want 0", len(got))
	}
	if got := refused(ms, "actions_off"); got != "2" {
		t.Errorf("refused{actions_off} = %s; want 2", got)
	}
	// Reads stay open.
	if code, _ := call(t, h, "GET", "/v1/rollouts/a", "", ""); code != 200 {
		t.Errorf("GET /v1/rollouts/a: %d; want 200", code)
	}
}

// TestActionAuth: a missing or wrong token is refused with 401 and counted;
// a right one reaches the ActionSource with the token's holder.
func TestActionAuth(t *testing.T) {
	dir := t.TempDir()
	file := writeFile(t, filepath.Join(dir, "tokens"), "# operators\nci-pipeline "+tokenA+"\n\n"+tokenB+"  \n")
	src := &actSource{statuses: statuses{{Rollout: "a", Canary: "v2"}}}
	ms := metrics.NewSet()
	h, err := sink.NewHandler(src, ms, nil, sink.TokenFile(file))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, auth string
		code       int
		reason     string
	}{
		{"no header", "", 401, "no_token"},
		{"basic auth", "Basic " + tokenA, 401, "no_token"},
		{"empty bearer", "Bearer ", 401, "no_token"},
		{"wrong token", "Bearer " + tokenA + "x", 401, "bad_token"},
		{"prefix of a token", "Bearer " + tokenA[:20], 401, "bad_token"},
	} {
		req := httptest.NewRequest("POST", "/v1/rollouts/a/abort", strings.NewReader(`{}`))
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != tc.code {
			t.Errorf("%s: %d; want %d", tc.name, rec.Code, tc.code)
		}
		if got := rec.Header().Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer") {
			t.Errorf("%s: WWW-Authenticate %q; want Bearer", tc.name, got)
		}
		if !strings.Contains(rec.Body.String(), `"error"`) {
			t.Errorf("%s: body %q; want a JSON error", tc.name, rec.Body.String())
		}
	}
	if got := refused(ms, "no_token"); got != "3" {
		t.Errorf("refused{no_token} = %s; want 3", got)
	}
	if got := refused(ms, "bad_token"); got != "2" {
		t.Errorf("refused{bad_token} = %s; want 2", got)
	}
	if got := src.called(); len(got) != 0 {
		t.Fatalf("Act called %v by refused requests", got)
	}

	code, body := call(t, h, "POST", "/v1/rollouts/a/abort", tokenA, `{"reason":"p99 too high","canary":"v2"}`)
	if code != 200 {
		t.Fatalf("POST with the right token: %d %v; want 200", code, body)
	}
	if body["by"] != "ci-pipeline" || body["action"] != "abort" || body["rollout"] != "a" {
		t.Errorf("reply %v; want by ci-pipeline, action abort, rollout a", body)
	}
	if st, _ := body["status"].(map[string]any); st["canary"] != "v2" {
		t.Errorf("reply status %v; want the rollout's status", body["status"])
	}
	// The unnamed token is named after its digest; a "by" in the body is
	// kept, the token holder recorded beside it.
	code, body = call(t, h, "POST", "/v1/rollouts/a/pause", tokenB, `{"by":"alice"}`)
	if code != 200 || body["by"] != "alice" {
		t.Fatalf("POST with by alice: %d %v", code, body)
	}
	calls := src.called()
	if len(calls) != 2 {
		t.Fatalf("Act called %d times; want 2", len(calls))
	}
	want0 := actCall{"a", "abort", sink.ActionRequest{Reason: "p99 too high", By: "ci-pipeline", Canary: "v2", Token: "ci-pipeline"}}
	if calls[0] != want0 {
		t.Errorf("first call %+v; want %+v", calls[0], want0)
	}
	if c := calls[1]; c.action != "pause" || c.req.By != "alice" || !strings.HasPrefix(c.req.Token, "token-") || len(c.req.Token) != len("token-")+8 {
		t.Errorf("second call %+v; want pause by alice with token holder token-XXXXXXXX", c)
	}
}

// TestActionErrors: each refusal has its status, a JSON error and a count,
// and changes nothing the source did not decide.
func TestActionErrors(t *testing.T) {
	file := writeFile(t, filepath.Join(t.TempDir(), "token"), tokenA+"\n")
	for _, tc := range []struct {
		name, path, body string
		err              error
		code             int
		reason           string
		calls            int
	}{
		{"unknown action", "/v1/rollouts/a/frobnicate", "", nil, 400, "unknown_action", 0},
		{"unknown rollout", "/v1/rollouts/zz/pause", "", fmt.Errorf("pause: %w \"zz\"", sink.ErrUnknownRollout), 404, "unknown_rollout", 1},
		{"action the source lacks", "/v1/rollouts/a/retry", "", fmt.Errorf("retry: %w", sink.ErrUnknownAction), 400, "unknown_action", 1},
		{"start of the baseline", "/v1/rollouts/a/start", `{"canary":"v1"}`, fmt.Errorf("start v1: it is the baseline: %w", sink.ErrInvalidAction), 400, "invalid_action", 1},
		{"approve without gate", "/v1/rollouts/a/approve", "", fmt.Errorf("approve: step 1 has no approval gate: %w", sink.ErrConflict), 409, "conflict", 1},
		{"not JSON", "/v1/rollouts/a/pause", `reason=x`, nil, 400, "bad_request", 0},
		{"unknown field", "/v1/rollouts/a/pause", `{"reson":"x"}`, nil, 400, "bad_request", 0},
		{"two values", "/v1/rollouts/a/pause", `{} {}`, nil, 400, "bad_request", 0},
		{"reason too long", "/v1/rollouts/a/pause", `{"reason":"` + strings.Repeat("x", 2000) + `"}`, nil, 400, "bad_request", 0},
		{"failure", "/v1/rollouts/a/pause", "", errors.New("checkpoint: disk full"), 500, "", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := &actSource{statuses: statuses{{Rollout: "a"}}, err: tc.err}
			ms := metrics.NewSet()
			h, err := sink.NewHandler(src, ms, nil, sink.TokenFile(file))
			if err != nil {
				t.Fatal(err)
			}
			code, body := call(t, h, "POST", tc.path, tokenA, tc.body)
			if code != tc.code {
				t.Errorf("status %d; want %d", code, tc.code)
			}
			msg, _ := body["error"].(string)
			if msg == "" || (tc.err != nil && msg != tc.err.Error()) {
				t.Errorf("error %q; want %q", msg, tc.err)
			}
			if tc.reason != "" {
				if got := refused(ms, tc.reason); got != "1" {
					t.Errorf("refused{%s} = %s; want 1", tc.reason, got)
				}
			}
			if got := len(src.called()); got != tc.calls {
				t.Errorf("Act called %d times; want %d", got, tc.calls)
			}
		})
	}
}

// TestTokenRotation: the token file is read again when it changes — by a
// Kubernetes-style symlink swap or in place — and a broken file fails
// closed.
func TestTokenRotation(t *testing.T) {
	dir := t.TempDir()
	// A Secret volume: token → ..data/token, ..data → ..2026_12_03_1.
	swap := func(name, content string) {
		t.Helper()
		if err := os.Mkdir(filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, name, "token"), content)
		tmp := filepath.Join(dir, "..data_tmp")
		if err := os.Symlink(name, tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	swap("..2026_12_03_1", tokenA)
	file := filepath.Join(dir, "token")
	if err := os.Symlink("..data/token", file); err != nil {
		t.Fatal(err)
	}
	src := &actSource{statuses: statuses{{Rollout: "a"}}}
	ms := metrics.NewSet()
	h, err := sink.NewHandler(src, ms, nil, sink.TokenFile(file))
	if err != nil {
		t.Fatal(err)
	}
	post := func(tok string) int {
		code, _ := call(t, h, "POST", "/v1/rollouts/a/pause", tok, "")
		return code
	}
	if got := post(tokenA); got != 200 {
		t.Fatalf("token A before rotation: %d; want 200", got)
	}
	swap("..2026_12_03_2", tokenB+"\n")
	if got := post(tokenA); got != 401 {
		t.Errorf("token A after rotation: %d; want 401", got)
	}
	if got := post(tokenB); got != 200 {
		t.Errorf("token B after rotation: %d; want 200", got)
	}
	// In place, and broken: every request refused, none let through.
	writeFile(t, filepath.Join(dir, "..2026_12_03_2", "token"), "short\n")
	for _, tok := range []string{tokenA, tokenB, "short"} {
		if got := post(tok); got != 503 {
			t.Errorf("token %q with a broken token file: %d; want 503", tok, got)
		}
	}
	if got := refused(ms, "token_file"); got != "3" {
		t.Errorf("refused{token_file} = %s; want 3", got)
	}
	// Removed: still closed.
	if err := os.Remove(filepath.Join(dir, "..2026_12_03_2", "token")); err != nil {
		t.Fatal(err)
	}
	if got := post(tokenB); got != 503 {
		t.Errorf("token B with the token file gone: %d; want 503", got)
	}
	// Fixed: open to the new token again.
	writeFile(t, filepath.Join(dir, "..2026_12_03_2", "token"), "  "+tokenA+"  \n")
	if got := post(tokenA); got != 200 {
		t.Errorf("token A with the file fixed: %d; want 200", got)
	}
}

// TestTokenFileRefusedAtStart: a token file that cannot serve is an error
// before the server starts, and so are settings that cannot work together.
func TestTokenFileRefusedAtStart(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		opts []sink.ServerOpt
		want string
	}{
		{"missing", []sink.ServerOpt{sink.TokenFile(filepath.Join(dir, "nope"))}, "no such file"},
		{"empty", []sink.ServerOpt{sink.TokenFile(writeFile(t, filepath.Join(dir, "empty"), "\n# none\n"))}, "no token"},
		{"short", []sink.ServerOpt{sink.TokenFile(writeFile(t, filepath.Join(dir, "short"), "secret\n"))}, "line 1: token shorter than 16"},
		{"bad characters", []sink.ServerOpt{sink.TokenFile(writeFile(t, filepath.Join(dir, "bad"), "ok "+tokenA+"\n\"quoted-token-1234567\"\n"))}, "line 2: token has characters"},
		{"three fields", []sink.ServerOpt{sink.TokenFile(writeFile(t, filepath.Join(dir, "three"), "a b c\n"))}, "line 1: want TOKEN or NAME TOKEN"},
		{"protect reads without token", []sink.ServerOpt{sink.ProtectReads(true)}, "--http-token-file"},
		{"cert without key", []sink.ServerOpt{sink.TLSFiles("cert.pem", "")}, "--http-tls-key"},
	} {
		_, err := sink.NewServer("127.0.0.1:0", statuses{}, nil, nil, tc.opts...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: NewServer error %v; want one containing %q", tc.name, err, tc.want)
		}
	}
}

// TestProtectReads: with ProtectReads every GET but the probes needs the
// token; without it, reads are open even when a token is configured.
func TestProtectReads(t *testing.T) {
	file := writeFile(t, filepath.Join(t.TempDir(), "token"), tokenA)
	src := &actSource{statuses: statuses{{Rollout: "a"}}}
	for _, protect := range []bool{false, true} {
		h, err := sink.NewHandler(src, metrics.NewSet(), nil, sink.TokenFile(file), sink.ProtectReads(protect))
		if err != nil {
			t.Fatal(err)
		}
		for _, rt := range sink.Routes() {
			if rt.Method != "GET" {
				continue
			}
			path := strings.ReplaceAll(rt.Path, "{id}", "a")
			code, _ := call(t, h, "GET", path, "", "")
			wantOpen := !protect || rt.Access == sink.Probe
			if wantOpen && code == 401 || !wantOpen && code != 401 {
				t.Errorf("protect %v: GET %s without token: %d; want open: %v", protect, path, code, wantOpen)
			}
			if code, _ := call(t, h, "GET", path, tokenA, ""); code == 401 {
				t.Errorf("protect %v: GET %s with the token: 401", protect, path)
			}
		}
	}
}

// TestConstantTimeCompare: the presented token is compared only through
// crypto/subtle, never with == or a string function that stops at the
// first difference. (A source check: timing cannot be measured reliably in
// a test.)
func TestConstantTimeCompare(t *testing.T) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "http_auth.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	secret := func(e ast.Expr) bool {
		var b strings.Builder
		ast.Inspect(e, func(n ast.Node) bool {
			if id, ok := n.(*ast.Ident); ok {
				b.WriteString(id.Name + " ")
			}
			return true
		})
		s := strings.ToLower(b.String())
		return strings.Contains(s, "tok") || strings.Contains(s, "presented") || strings.Contains(s, "digest")
	}
	subtleInMatch := false
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.FuncDecl:
			if n.Name.Name == "match" {
				ast.Inspect(n.Body, func(m ast.Node) bool {
					if sel, ok := m.(*ast.SelectorExpr); ok && sel.Sel.Name == "ConstantTimeCompare" {
						if x, ok := sel.X.(*ast.Ident); ok && x.Name == "subtle" {
							subtleInMatch = true
						}
					}
					return true
				})
			}
		case *ast.BinaryExpr:
			if n.Op != token.EQL && n.Op != token.NEQ {
				return true
			}
			lit, _ := n.Y.(*ast.BasicLit)
			if (secret(n.X) || secret(n.Y)) && (lit == nil || lit.Value != `""`) {
				t.Errorf("%s: %s compares a token with %s", fset.Position(n.Pos()), exprString(n), n.Op)
			}
		case *ast.CallExpr:
			if sel, ok := n.Fun.(*ast.SelectorExpr); ok {
				switch sel.Sel.Name {
				case "Compare", "Equal", "EqualFold", "HasPrefix":
					for _, a := range n.Args {
						if id, ok := a.(*ast.Ident); ok && (id.Name == "tok" || id.Name == "presented") {
							t.Errorf("%s: %s compares the presented token", fset.Position(n.Pos()), exprString(n))
						}
					}
				}
			}
		}
		return true
	})
	if !subtleInMatch {
		t.Error("(*tokenSet).match does not call subtle.ConstantTimeCompare")
	}
}

func exprString(e ast.Expr) string {
	var b bytes.Buffer
	_ = printer.Fprint(&b, token.NewFileSet(), e)
	return b.String()
}

// TestHTTPS: with TLSFiles the server speaks only TLS, with the
// certificate from the files, and picks up a new certificate when the
// files change.
func TestHTTPS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	ca1 := writeCert(t, certFile, keyFile, "canaryd-1")
	srv, err := sink.NewServer("127.0.0.1:0", statuses{{Rollout: "a"}}, metrics.NewSet(), nil, sink.TLSFiles(certFile, keyFile))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	url := "https://" + srv.Addr() + "/v1/rollouts/a"
	client := func(ca *x509.Certificate) *http.Client {
		pool := x509.NewCertPool()
		pool.AddCert(ca)
		return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}}}
	}
	get := func(c *http.Client) (int, error) {
		resp, err := c.Get(url)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, nil
	}
	if code, err := get(client(ca1)); err != nil || code != 200 {
		t.Fatalf("GET over TLS trusting the certificate: %d %v; want 200", code, err)
	}
	if _, err := get(&http.Client{}); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("GET over TLS with the system roots: %v; want a certificate error", err)
	}
	// Plain HTTP to the TLS port gets Go's 400, not the API.
	resp, err := http.Get("http://" + srv.Addr() + "/v1/rollouts/a")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Errorf("plain HTTP to the HTTPS port: %d; want 400", resp.StatusCode)
	}
	// Rotation: a client that trusts only the new certificate gets through
	// once the files hold it.
	ca2 := writeCert(t, certFile, keyFile, "canaryd-2")
	c2 := client(ca2)
	c2.Transport.(*http.Transport).DisableKeepAlives = true
	if code, err := get(c2); err != nil || code != 200 {
		t.Errorf("GET trusting the rotated certificate: %d %v; want 200", code, err)
	}
}

// writeCert writes a new self-signed certificate for 127.0.0.1 and its key
// and returns the certificate.
func writeCert(t *testing.T, certFile, keyFile, cn string) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	// Key first, then certificate, each by rename: a handshake in between
	// sees either the old pair or a mismatched one, which keeps the old.
	for _, f := range []struct {
		path, typ string
		der       []byte
	}{{keyFile, "EC PRIVATE KEY", kder}, {certFile, "CERTIFICATE", der}} {
		tmp := f.path + ".tmp"
		writeFile(t, tmp, string(pem.EncodeToMemory(&pem.Block{Type: f.typ, Bytes: f.der})))
		if err := os.Rename(tmp, f.path); err != nil {
			t.Fatal(err)
		}
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}
