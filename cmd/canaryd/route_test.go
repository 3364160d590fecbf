package main

import (
	"io"
	"strings"
	"testing"
	"time"
)

// TestRouteFlags: canaryd route refuses to start without its routes file
// and brokers, naming the flags and their variables, and takes its settings
// from the environment like canaryd run.
func TestRouteFlags(t *testing.T) {
	none := func(string) (string, bool) { return "", false }
	_, err := parseRoute(nil, none, io.Discard)
	for _, want := range []string{"--routes [CANARYD_ROUTES] is required", "--brokers [CANARYD_BROKERS] is required"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("no flags: %v; want %q", err, want)
		}
	}
	if _, err := parseRoute([]string{"--routes", "r.yaml", "--brokers", "k:9092", "--max-backoff", "-1s"}, none, io.Discard); err == nil || !strings.Contains(err.Error(), "max-backoff") {
		t.Errorf("negative backoff: %v; want it refused", err)
	}
	env := map[string]string{"CANARYD_ROUTES": "/etc/canaryd/routes.yaml", "CANARYD_BROKERS": "kafka:9092", "CANARYD_ROUTER_ID": "pod-7", "CANARYD_MIN_BACKOFF": "1s"}
	r, err := parseRoute(nil, func(k string) (string, bool) { v, ok := env[k]; return v, ok }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if r.routes != env["CANARYD_ROUTES"] || r.brokers != "kafka:9092" || r.routerID != "pod-7" || r.minBackoff != time.Second || r.acksTopic != "canary.acks" {
		t.Errorf("from the environment: %+v", r)
	}
}
