package sink

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
)

// MinTokenLen is the shortest bearer token a token file may hold.
const MinTokenLen = 16

// Auth checks bearer tokens (Authorization: Bearer TOKEN) against a token
// file. The file holds one token per line, optionally after the name of
// its holder and a space ("ci-pipeline TOKEN"); blank lines and lines
// starting with # are ignored, surrounding whitespace is trimmed, so a
// Kubernetes Secret holding one token (with or without a final newline)
// works as is. A token is at least MinTokenLen characters of RFC 6750's
// token alphabet (A–Z a–z 0–9 - . _ ~ + / and trailing =).
//
// The holder's name, or for an unnamed token "token-" and the first 8 hex
// digits of the token's SHA-256, identifies who acted in the audit trail
// (TokenHolder). Presented tokens are compared with every configured one
// in constant time, on their SHA-256 digests, so neither the content nor
// the length of a token leaks through timing.
//
// The file is stat'ed at each request and read again when it changed
// (modification time, size or inode: a Kubernetes Secret volume swaps a
// symlink). A file that cannot be read or holds no valid token refuses
// every request with 503 until it is fixed: a broken rotation fails
// closed, it never opens the endpoints.
type Auth struct {
	file string
	ref  refuser
	log  *slog.Logger
	// cur is the last load of the file; replaced (never mutated) after a
	// reload, so requests read it without a lock and no lock is held
	// while the file is read.
	cur atomic.Pointer[tokenSet]
}

type tokenSet struct {
	stamp  fileStamp
	tokens []tokenEntry
	err    error // why the file is unusable; nil when tokens is not empty
}

type tokenEntry struct {
	digest [sha256.Size]byte
	holder string
}

// NewAuth reads tokenFile and returns its Auth, or an error when it cannot
// be read or holds no valid token. An empty tokenFile returns nil: no
// token configured. Refusals are counted on ms (nil: not counted).
func NewAuth(tokenFile string, ms *metrics.Set, log *slog.Logger) (*Auth, error) {
	if tokenFile == "" {
		return nil, nil
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &Auth{file: tokenFile, ref: refuser{ms}, log: log}
	ts := loadTokens(tokenFile)
	if ts.err != nil {
		return nil, ts.err
	}
	a.cur.Store(ts)
	return a, nil
}

// loadTokens reads and parses a token file, recording its stamp as of just
// before the read (a change during the read is seen at the next stat).
func loadTokens(file string) *tokenSet {
	st, err := stat(file)
	if err != nil {
		return &tokenSet{err: fmt.Errorf("token file: %w", err)}
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return &tokenSet{stamp: st, err: fmt.Errorf("token file: %w", err)}
	}
	tokens, err := parseTokens(b)
	if err != nil {
		return &tokenSet{stamp: st, err: fmt.Errorf("token file %s: %w", file, err)}
	}
	return &tokenSet{stamp: st, tokens: tokens}
}

func parseTokens(b []byte) ([]tokenEntry, error) {
	var out []tokenEntry
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		var holder, tok string
		switch f := strings.Fields(line); len(f) {
		case 1:
			tok = f[0]
		case 2:
			holder, tok = f[0], f[1]
		default:
			return nil, fmt.Errorf("line %d: want TOKEN or NAME TOKEN, got %d fields", n, len(f))
		}
		if len(tok) < MinTokenLen {
			return nil, fmt.Errorf("line %d: token shorter than %d characters", n, MinTokenLen)
		}
		if !validToken(tok) {
			return nil, fmt.Errorf("line %d: token has characters outside A-Z a-z 0-9 - . _ ~ + / =", n)
		}
		d := sha256.Sum256([]byte(tok))
		if holder == "" {
			holder = "token-" + hex.EncodeToString(d[:4])
		}
		out = append(out, tokenEntry{digest: d, holder: holder})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, errors.New("no token in it")
	}
	return out, nil
}

// validToken: RFC 6750 b64token, 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=".
func validToken(s string) bool {
	s = strings.TrimRight(s, "=")
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/':
		default:
			return false
		}
	}
	return true
}

// tokens returns the current token set, reading the file again if it
// changed since the last read.
func (a *Auth) tokens() *tokenSet {
	cur := a.cur.Load()
	st, err := stat(a.file)
	if err == nil && st.same(cur.stamp) {
		return cur
	}
	if err != nil && cur.err != nil && cur.stamp.zero() {
		return cur // still missing: already logged
	}
	next := loadTokens(a.file)
	if a.cur.CompareAndSwap(cur, next) {
		if next.err != nil {
			a.log.Error("HTTP token file unusable: refusing every request that needs a token until it is fixed", "file", a.file, "err", next.err)
		} else {
			a.log.Info("HTTP token file reloaded", "file", a.file, "tokens", len(next.tokens))
		}
	}
	return a.cur.Load()
}

// match returns the holder of the presented token, or "" when no
// configured token matches. Every configured token is compared, in
// constant time on SHA-256 digests, whatever matched before.
func (ts *tokenSet) match(presented string) string {
	d := sha256.Sum256([]byte(presented))
	found := -1
	for i := range ts.tokens {
		eq := subtle.ConstantTimeCompare(d[:], ts.tokens[i].digest[:])
		found = subtle.ConstantTimeSelect(eq, i, found)
	}
	if found < 0 {
		return ""
	}
	return ts.tokens[found].holder
}

type holderKey struct{}

// TokenHolder returns the name of the token that authenticated the request
// (see Auth), or "" when the request carried none.
func TokenHolder(ctx context.Context) string {
	h, _ := ctx.Value(holderKey{}).(string)
	return h
}

// Require wraps next so that it runs only for a request with a valid
// bearer token; the token's holder is in the request's context
// (TokenHolder). Refusals answer JSON {"error": "..."} and are counted in
// canaryd_http_refused_total{reason}: 401 no_token (no Authorization:
// Bearer header), 401 bad_token (no configured token matches), 503
// token_file (the token file is unusable).
func (a *Auth) Require(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ts := a.tokens()
		if ts.err != nil {
			a.ref.refuse(w, http.StatusServiceUnavailable, "token_file", "the server's token file is unusable; see its log")
			return
		}
		scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="canaryd"`)
			a.ref.refuse(w, http.StatusUnauthorized, "no_token", "this endpoint needs a bearer token: Authorization: Bearer TOKEN")
			return
		}
		holder := ts.match(strings.TrimSpace(tok))
		if holder == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="canaryd", error="invalid_token"`)
			a.ref.refuse(w, http.StatusUnauthorized, "bad_token", "invalid bearer token")
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), holderKey{}, holder)))
	})
}

// refuser answers refusals with a JSON error and counts them.
type refuser struct{ ms *metrics.Set }

// refuse answers code with {"error": msg} and counts
// canaryd_http_refused_total{reason}.
func (f refuser) refuse(w http.ResponseWriter, code int, reason, msg string) {
	if f.ms != nil {
		f.ms.GetOrCreateCounter(`canaryd_http_refused_total{reason="` + reason + `"}`).Inc()
	}
	writeJSON(w, code, map[string]string{"error": msg})
}

// fileStamp tells whether a file changed since it was read.
type fileStamp struct {
	fi  os.FileInfo
	mod time.Time
	n   int64
}

func stat(file string) (fileStamp, error) {
	fi, err := os.Stat(file) // follows symlinks: a swapped Secret volume is a new inode
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{fi: fi, mod: fi.ModTime(), n: fi.Size()}, nil
}

func (s fileStamp) zero() bool { return s.fi == nil }

func (s fileStamp) same(o fileStamp) bool {
	return s.fi != nil && o.fi != nil && os.SameFile(s.fi, o.fi) && s.mod.Equal(o.mod) && s.n == o.n
}

// certFiles serves a certificate and key from files, loaded again when
// either file changes; a failed load keeps the last good pair (and is not
// retried until the files change again).
type certFiles struct {
	cert, key string
	log       *slog.Logger
	cur       atomic.Pointer[loadedCert]
}

type loadedCert struct {
	cs, ks fileStamp
	cert   *tls.Certificate
}

func newCertFiles(cert, key string, log *slog.Logger) (*certFiles, error) {
	c := &certFiles{cert: cert, key: key, log: log}
	lc, err := c.load()
	if err != nil {
		return nil, err
	}
	c.cur.Store(lc)
	return c, nil
}

func (c *certFiles) load() (*loadedCert, error) {
	cs, err := stat(c.cert)
	if err != nil {
		return nil, fmt.Errorf("TLS certificate: %w", err)
	}
	ks, err := stat(c.key)
	if err != nil {
		return nil, fmt.Errorf("TLS key: %w", err)
	}
	pair, err := tls.LoadX509KeyPair(c.cert, c.key)
	if err != nil {
		return &loadedCert{cs: cs, ks: ks}, fmt.Errorf("TLS certificate %s and key %s: %w", c.cert, c.key, err)
	}
	return &loadedCert{cs: cs, ks: ks, cert: &pair}, nil
}

// getCertificate is tls.Config.GetCertificate.
func (c *certFiles) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	cur := c.cur.Load()
	cs, err1 := stat(c.cert)
	ks, err2 := stat(c.key)
	if err1 != nil || err2 != nil || (cs.same(cur.cs) && ks.same(cur.ks)) {
		return cur.cert, nil
	}
	next, err := c.load()
	if err != nil {
		c.log.Error("HTTPS certificate reload failed: serving the previous one", "cert", c.cert, "key", c.key, "err", err)
		if next == nil {
			return cur.cert, nil
		}
		next.cert = cur.cert
	} else {
		c.log.Info("HTTPS certificate reloaded", "cert", c.cert)
	}
	c.cur.CompareAndSwap(cur, next)
	return c.cur.Load().cert, nil
}
