package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/inferensys/canaryd/detector"
	"github.com/inferensys/canaryd/internal/daemon"
	"github.com/inferensys/canaryd/internal/kafkatest"
)

// secureBroker is the SASL_SSL and mTLS side of the broker that
// scripts/kafka.sh start runs (see its header); `make test` exports it.
type secureBroker struct {
	saslSSL, mtls  string // seed brokers
	tlsDir         string // ca.pem, client.pem, client.key
	user, password string
}

func (b secureBroker) file(name string) string { return filepath.Join(b.tlsDir, name) }

// needSecureBroker returns the broker's secure listeners, or skips when the
// variables of scripts/kafka.sh start are not set (make test-short, kfake).
func needSecureBroker(t *testing.T) secureBroker {
	t.Helper()
	b := secureBroker{
		saslSSL: os.Getenv("KAFKA_SASL_SSL_BROKERS"), mtls: os.Getenv("KAFKA_MTLS_BROKERS"),
		tlsDir: os.Getenv("KAFKA_TLS_DIR"), user: os.Getenv("KAFKA_SASL_USER"), password: os.Getenv("KAFKA_SASL_PASSWORD"),
	}
	if b.saslSSL == "" || b.mtls == "" || b.tlsDir == "" || b.user == "" || b.password == "" {
		t.Skip("no secure Kafka listeners: KAFKA_SASL_SSL_BROKERS, KAFKA_MTLS_BROKERS, KAFKA_TLS_DIR, KAFKA_SASL_USER and KAFKA_SASL_PASSWORD " +
			"come from scripts/kafka.sh start (make test sets them)")
	}
	return b
}

// unsecuredJWT is a token Kafka's unsecured OAUTHBEARER validator accepts:
// unsigned ("alg":"none"), with a subject and an expiry.
func unsecuredJWT(sub string, exp time.Time) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"none"}`)) + "." +
		enc(fmt.Appendf(nil, `{"sub":%q,"iat":%d,"exp":%d}`, sub, exp.Add(-time.Hour).Unix(), exp.Unix())) + "."
}

// otherCA writes a self-signed CA certificate that signed nothing of the
// broker's, and returns its file.
func otherCA(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "not the broker's CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "other-ca.pem")
	if err := os.WriteFile(f, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// roundTrip connects with opts, produces one record to a new topic and
// reads it back.
func roundTrip(ctx context.Context, t *testing.T, brokers string, opts []kgo.Opt) error {
	topic := kafkatest.Topic(t)
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(brokers), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.AllowAutoTopicCreation()}, opts...)...)
	if err != nil {
		return err
	}
	defer cl.Close()
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte("hello")}).FirstErr(); err != nil {
		return fmt.Errorf("produce: %w", err)
	}
	for {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("consume: %w", err)
		}
		var got []string
		fs.EachRecord(func(r *kgo.Record) { got = append(got, string(r.Value)) })
		if len(got) > 0 {
			if got[0] != "hello" {
				return fmt.Errorf("read %q; want %q", got[0], "hello")
			}
			return nil
		}
		for _, fe := range fs.Errors() {
			return fmt.Errorf("consume: %w", fe.Err)
		}
	}
}

// ping connects with opts and asks for metadata; it gives up quickly.
func ping(t *testing.T, brokers string, opts []kgo.Opt) error {
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(brokers), kgo.RequestRetries(0)}, opts...)...)
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	return cl.Ping(ctx)
}

// TestKafkaSecurity proves each way canaryd run authenticates, with the
// options built by securityOpts from the flags' values, against a real
// broker: it produces and consumes on the secure listeners, and the wrong
// password, CA or a missing client certificate fail with a clear error.
func TestKafkaSecurity(t *testing.T) {
	b := needSecureBroker(t)
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "password")
	if err := os.WriteFile(pwFile, []byte(b.password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(unsecuredJWT("canaryd", time.Now().Add(time.Hour))), 0o600); err != nil {
		t.Fatal(err)
	}
	ca := b.file("ca.pem")
	for _, c := range []struct {
		name    string
		brokers string
		sec     security
		wantErr string // empty: the round trip must work
	}{
		{"scram-sha-512", b.saslSSL, security{CAFile: ca, Mechanism: "scram-sha-512", User: b.user, Password: b.password}, ""},
		{"scram-sha-256 password file", b.saslSSL, security{CAFile: ca, Mechanism: "SCRAM-SHA-256", User: b.user, PasswordFile: pwFile}, ""},
		{"plain", b.saslSSL, security{CAFile: ca, Mechanism: "plain", User: b.user, Password: b.password}, ""},
		{"oauthbearer", b.saslSSL, security{CAFile: ca, Mechanism: "oauthbearer", TokenFile: tokenFile}, ""},
		{"mtls", b.mtls, security{CAFile: ca, CertFile: b.file("client.pem"), KeyFile: b.file("client.key")}, ""},
		{"mtls server name", b.mtls, security{CAFile: ca, CertFile: b.file("client.pem"), KeyFile: b.file("client.key"), ServerName: "localhost"}, ""},

		{"wrong password", b.saslSSL, security{CAFile: ca, Mechanism: "scram-sha-512", User: b.user, Password: "wrong"}, "SASL_AUTHENTICATION_FAILED"},
		{"wrong plain password", b.saslSSL, security{CAFile: ca, Mechanism: "plain", User: b.user, Password: "wrong"}, "SASL_AUTHENTICATION_FAILED"},
		{"expired token", b.saslSSL, security{CAFile: ca, Mechanism: "oauthbearer", TokenFile: writeFile(t, unsecuredJWT("canaryd", time.Now().Add(-time.Minute)))}, "SASL_AUTHENTICATION_FAILED"},
		{"no client certificate", b.mtls, security{CAFile: ca}, "tls: bad certificate"},
		{"wrong CA", b.saslSSL, security{CAFile: otherCA(t), Mechanism: "scram-sha-512", User: b.user, Password: b.password}, "certificate signed by unknown authority"},
		{"system roots", b.mtls, security{TLS: true, CertFile: b.file("client.pem"), KeyFile: b.file("client.key")}, "certificate signed by unknown authority"},
		{"wrong server name", b.mtls, security{CAFile: ca, CertFile: b.file("client.pem"), KeyFile: b.file("client.key"), ServerName: "kafka.example"}, "kafka.example"},
	} {
		t.Run(c.name, func(t *testing.T) {
			opts, err := securityOpts(c.sec)
			if err != nil {
				t.Fatalf("securityOpts: %v", err)
			}
			if c.wantErr == "" {
				ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
				defer cancel()
				if err := roundTrip(ctx, t, c.brokers, opts); err != nil {
					t.Fatalf("got %v; want a produce and consume round trip", err)
				}
				return
			}
			if err := ping(t, c.brokers, opts); err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("got error %v; want one containing %q", err, c.wantErr)
			}
		})
	}
}

// TestOAuthTokenReread: the token file is read at each authentication, so a
// rotated token (a Kubernetes projected token) is used by the same options.
func TestOAuthTokenReread(t *testing.T) {
	b := needSecureBroker(t)
	tokenFile := writeFile(t, unsecuredJWT("canaryd", time.Now().Add(time.Hour)))
	opts, err := securityOpts(security{CAFile: b.file("ca.pem"), Mechanism: "oauthbearer", TokenFile: tokenFile})
	if err != nil {
		t.Fatal(err)
	}
	if err := ping(t, b.saslSSL, opts); err != nil {
		t.Fatalf("valid token: got %v; want no error", err)
	}
	if err := os.WriteFile(tokenFile, []byte(unsecuredJWT("canaryd", time.Now().Add(-time.Minute))), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := ping(t, b.saslSSL, opts); err == nil || !strings.Contains(err.Error(), "SASL_AUTHENTICATION_FAILED") {
		t.Fatalf("the same options after the token file expired: got %v; want SASL_AUTHENTICATION_FAILED", err)
	}
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "secret")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(content); err != nil {
		t.Fatal(err)
	}
	return f.Name()
}

// TestDaemonOverSASLSSL runs the whole daemon as canaryd run builds it, over
// SASL_SSL with SCRAM-SHA-512: it creates its topics, reads the control
// topic, joins its group and consumes events.
func TestDaemonOverSASLSSL(t *testing.T) {
	b := needSecureBroker(t)
	r, _, err := parseRun([]string{"--brokers", b.saslSSL, "--specs", "unused", "--tls-ca-file", b.file("ca.pem"),
		"--sasl-mechanism", "scram-sha-512", "--sasl-user", b.user, "--session-timeout", "6s"},
		nil, envMap("CANARYD_SASL_PASSWORD", b.password), t.Output())
	if err != nil {
		t.Fatal(err)
	}
	opts, err := securityOpts(r.sec)
	if err != nil {
		t.Fatal(err)
	}
	base := kafkatest.Topic(t)
	cfg := r.cfg
	cfg.Brokers = []string{b.saslSSL}
	cfg.EventsTopic, cfg.ControlTopic, cfg.DLQTopic, cfg.Group = base+".events", base+".control", base+".dlq", base
	cfg.Partitions, cfg.HTTPAddr, cfg.KgoOpts = 2, "", opts
	if cfg.Specs, err = detector.ParseSpecs("sec.yaml", []byte("rollout: sec\nbaseline: v1\ncanary: v2\nsteps:\n  - {weight: 10}\n  - {weight: 100}\n")); err != nil {
		t.Fatal(err)
	}
	ms := metrics.NewSet()
	cfg.Metrics = ms
	d, err := daemon.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("daemon.Run: %v", err)
		}
	}()

	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(b.saslSSL)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	const n = 20
	now := time.Now().UTC()
	for i := range n {
		v := fmt.Sprintf(`{"rollout":"sec","version":"v%d","kind":"llm","name":"m","ts":%q,"status":"ok","duration_ms":100}`, 1+i%2, now.Add(time.Duration(i)*time.Millisecond).Format(time.RFC3339Nano))
		// The daemon creates the events topic; until then the produce is retried.
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: cfg.EventsTopic, Key: []byte("sec"), Value: []byte(v)}).FirstErr(); err != nil {
			t.Fatalf("produce over SASL_SSL: %v", err)
		}
	}
	records := ms.GetOrCreateCounter("canaryd_records_total")
	deadline := time.Now().Add(90 * time.Second)
	for records.Get() < n && time.Now().Before(deadline) {
		select {
		case err := <-done:
			t.Fatalf("daemon.Run returned early: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
	if got := records.Get(); got != n {
		t.Fatalf("canaryd_records_total %d; want %d: the daemon did not consume over SASL_SSL", got, n)
	}
	topics, err := kadm.NewClient(cl).ListTopics(ctx, cfg.EventsTopic, cfg.ControlTopic, cfg.DLQTopic)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{cfg.EventsTopic, cfg.ControlTopic, cfg.DLQTopic} {
		if !topics.Has(name) {
			t.Errorf("topic %s not created over SASL_SSL", name)
		}
	}
}

// TestSecurityOptsErrors: a bad security setting is a start error naming
// its flag, before any connection.
func TestSecurityOptsErrors(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.txt")
	if err := os.WriteFile(notPEM, []byte("not a certificate\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing")
	for _, c := range []struct {
		name    string
		sec     security
		wantErr string
	}{
		{"unreadable CA", security{CAFile: missing}, "--tls-ca-file: open " + missing},
		{"CA without PEM", security{CAFile: notPEM}, "--tls-ca-file " + notPEM + ": no PEM certificate in it"},
		{"cert without key", security{CertFile: notPEM}, "--tls-cert-file without --tls-key-file"},
		{"key without cert", security{KeyFile: notPEM}, "--tls-key-file without --tls-cert-file"},
		{"bad key pair", security{CertFile: notPEM, KeyFile: notPEM}, "--tls-cert-file " + notPEM + " / --tls-key-file " + notPEM},
		{"unknown mechanism", security{Mechanism: "gssapi", User: "u", Password: "p"}, `--sasl-mechanism "gssapi": want plain, scram-sha-256, scram-sha-512 or oauthbearer`},
		{"scram without user", security{Mechanism: "scram-sha-512", Password: "p"}, "--sasl-mechanism scram-sha-512 needs --sasl-user"},
		{"plain without password", security{Mechanism: "plain", User: "u"}, "needs a password: CANARYD_SASL_PASSWORD or --sasl-password-file"},
		{"two passwords", security{Mechanism: "plain", User: "u", Password: "p", PasswordFile: empty}, "both CANARYD_SASL_PASSWORD and --sasl-password-file"},
		{"unreadable password file", security{Mechanism: "plain", User: "u", PasswordFile: missing}, "--sasl-password-file: open " + missing},
		{"empty password file", security{Mechanism: "plain", User: "u", PasswordFile: empty}, "--sasl-password-file " + empty + ": the file is empty"},
		{"oauthbearer without token", security{Mechanism: "oauthbearer"}, "--sasl-mechanism oauthbearer needs --sasl-oauth-token-file"},
		{"oauthbearer unreadable token", security{Mechanism: "oauthbearer", TokenFile: missing}, "--sasl-oauth-token-file: open " + missing},
		{"oauthbearer with user", security{Mechanism: "oauthbearer", TokenFile: notPEM, User: "u"}, "takes a token"},
		{"token without oauthbearer", security{Mechanism: "plain", User: "u", Password: "p", TokenFile: notPEM}, "--sasl-oauth-token-file is for --sasl-mechanism oauthbearer"},
		{"user without mechanism", security{User: "u"}, "without --sasl-mechanism"},
	} {
		if _, err := securityOpts(c.sec); err == nil || !strings.Contains(err.Error(), c.wantErr) {
			t.Errorf("%s: got error %v; want one containing %q", c.name, err, c.wantErr)
		}
	}
	// Through canaryd run: the error stops the start, before Kafka.
	spec := filepath.Join(dir, "s.yaml")
	if err := os.WriteFile(spec, []byte("rollout: r\nbaseline: v1\ncanary: v2\nsteps:\n  - weight: 5\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := runCmd(t.Context(), []string{"--brokers", "127.0.0.1:1", "--specs", spec, "--http", "", "--tls-cert-file", notPEM}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "--tls-cert-file without --tls-key-file") {
		t.Errorf("run --tls-cert-file alone: got %v; want the flag named", err)
	}
	for _, c := range []struct {
		sec  security
		opts int
	}{
		{security{}, 0},
		{security{TLS: true}, 1},
		{security{ServerName: "kafka"}, 1}, // any TLS setting implies TLS
		{security{Mechanism: "scram-sha-256", User: "u", Password: "p"}, 1},
		{security{TLS: true, Mechanism: "plain", User: "u", Password: "p"}, 2},
	} {
		opts, err := securityOpts(c.sec)
		if err != nil || len(opts) != c.opts {
			t.Errorf("securityOpts(%+v): got %d options, %v; want %d, no error", c.sec, len(opts), err, c.opts)
		}
	}
}
