package main

import (
	"io"
	"strings"
	"testing"
)

// TestHTTPSecurityFlags: the HTTP token and TLS flags reach daemon.Config,
// and settings that cannot work together stop the start.
func TestHTTPSecurityFlags(t *testing.T) {
	r, _, err := parseRun([]string{"--http-token-file", "/run/tokens", "--http-protect-reads", "--http-tls-cert", "c.pem"},
		nil, envMap("CANARYD_HTTP_TLS_KEY", "k.pem"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	c := r.cfg
	if c.HTTPTokenFile != "/run/tokens" || !c.HTTPProtectReads || c.HTTPTLSCert != "c.pem" || c.HTTPTLSKey != "k.pem" {
		t.Errorf("config: token file %q, protect reads %v, cert %q, key %q; want /run/tokens, true, c.pem, k.pem",
			c.HTTPTokenFile, c.HTTPProtectReads, c.HTTPTLSCert, c.HTTPTLSKey)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--http-protect-reads"}, "--http-protect-reads [CANARYD_HTTP_PROTECT_READS] needs --http-token-file"},
		{[]string{"--http-tls-cert", "c.pem"}, "--http-tls-cert and --http-tls-key"},
		{[]string{"--http-tls-key", "k.pem"}, "--http-tls-cert and --http-tls-key"},
	} {
		if _, _, err := parseRun(tc.args, nil, envMap(), io.Discard); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("run %q: error %v; want one containing %q", tc.args, err, tc.want)
		}
	}
	// The client commands' variables are not typos to run.
	_, unknown, err := parseRun(nil, []string{"CANARYD_SERVER=http://x", "CANARYD_TOKEN_FILE=t", "CANARYD_CA_FILE=c"}, envMap(), io.Discard)
	if err != nil || len(unknown) != 0 {
		t.Errorf("client variables reported as unknown to run: %q, %v", unknown, err)
	}
	for _, name := range clientEnv {
		if !envOnly[name] {
			t.Errorf("%s is a client variable but not in envOnly", name)
		}
	}
}
