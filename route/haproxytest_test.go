package route

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// haproxyBinary finds haproxy on PATH or in /usr/sbin (Debian installs it
// there, and /usr/sbin is not on every user's PATH). Missing, it fails with
// the command that installs it on root on Debian (make deps, like the
// promtool tests), and skips elsewhere.
func haproxyBinary(t testing.TB) string {
	t.Helper()
	if p, err := exec.LookPath("haproxy"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/sbin/haproxy"); err == nil {
		return "/usr/sbin/haproxy"
	}
	_, debErr := os.Stat("/etc/debian_version")
	if os.Geteuid() == 0 && debErr == nil {
		t.Fatalf("haproxy is required by this test and is not installed: run `make deps` (apt-get install haproxy)")
	}
	t.Skipf("haproxy is not installed (and this is not root on Debian, where make deps installs it): sudo apt-get install haproxy")
	return ""
}

// hpServer is one `server` line.
type hpServer struct {
	name, addr string
	weight     int
	extra      string // e.g. "disabled"
}

// hpBackend is one backend; the first one is the frontend's default.
type hpBackend struct {
	name, balance string
	servers       []hpServer
}

// haproxyProc is a running HAProxy started by startHAProxy.
type haproxyProc struct {
	cmd      *exec.Cmd
	admin    string // unix stats socket, level admin
	user     string // unix stats socket, level user
	tcpAdmin string // host:port of a TCP stats socket, level admin
	front    string // unix socket of the HTTP frontend
	log      *bytes.Buffer
}

// startHAProxy runs HAProxy in the foreground (-db) on a config written to a
// temporary directory, waits until its admin socket answers, and stops it at
// the end of the test. The TCP stats socket is a listener this process
// opened on 127.0.0.1:0 and hands over as fd 3 (HAProxy's "fd@3"), so no
// port is guessed. The frontend listens on a unix socket; clients dial it.
func startHAProxy(t testing.TB, backends ...hpBackend) *haproxyProc {
	t.Helper()
	bin := haproxyBinary(t)
	// Unix socket paths are limited to 108 bytes; t.TempDir's can be longer.
	dir, err := os.MkdirTemp("", "hp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	p := &haproxyProc{
		admin: filepath.Join(dir, "admin.sock"),
		user:  filepath.Join(dir, "user.sock"),
		front: filepath.Join(dir, "front.sock"),
		log:   new(bytes.Buffer),
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	p.tcpAdmin = ln.Addr().String()
	lf, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()

	var b strings.Builder
	fmt.Fprintf(&b, `global
    stats socket %s level admin
    stats socket %s level user
    stats socket fd@3 level admin
defaults
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s
frontend fe
    bind %s
    default_backend %s
`, p.admin, p.user, p.front, backends[0].name)
	for _, be := range backends {
		fmt.Fprintf(&b, "backend %s\n    balance %s\n", be.name, be.balance)
		for _, s := range be.servers {
			fmt.Fprintf(&b, "    server %s %s weight %d %s\n", s.name, s.addr, s.weight, s.extra)
		}
	}
	cfgPath := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(cfgPath, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(bin, "-db", "-f", cfgPath)
	p.cmd.ExtraFiles = []*os.File{lf} // fd 3
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start haproxy: %v", err)
	}
	// p.log is written by exec's copying goroutine until Wait returns: read
	// it only after exited is closed.
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = p.cmd.Wait(); close(exited) }()
	stop := func() {
		p.cmd.Process.Signal(syscall.SIGCONT) // in case a test stopped it
		p.cmd.Process.Kill()
		<-exited
	}
	t.Cleanup(stop)
	deadline := time.Now().Add(15 * time.Second)
	for {
		if out, err := hpRaw(p.admin, "show info"); err == nil && strings.Contains(out, "Name: HAProxy") {
			return p
		}
		select {
		case <-exited:
			t.Fatalf("haproxy exited before its socket answered: %v\nconfig:\n%s\noutput:\n%s", waitErr, b.String(), p.log)
		default:
		}
		if time.Now().After(deadline) {
			stop()
			t.Fatalf("haproxy's admin socket did not answer within 15s\noutput:\n%s", p.log)
		}
		time.Sleep(5 * time.Millisecond) // polling interval, not a decision
	}
}

// hpRaw sends one runtime API command to a unix socket, independently of
// the adapter, so the tests check HAProxy's state with their own eyes.
func hpRaw(sock, cmd string) (string, error) {
	c, err := net.DialTimeout("unix", sock, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, cmd+"\n"); err != nil {
		return "", err
	}
	b, err := io.ReadAll(c)
	return strings.TrimRight(string(b), "\n"), err
}

func (p *haproxyProc) cmdOK(t testing.TB, cmd string) string {
	t.Helper()
	out, err := hpRaw(p.admin, cmd)
	if err != nil {
		t.Fatalf("%s: %v", cmd, err)
	}
	return out
}

// weight reads a server's current weight from "N (initial M)".
func (p *haproxyProc) weight(t testing.TB, backend, server string) int {
	t.Helper()
	out := p.cmdOK(t, "get weight "+backend+"/"+server)
	f, _, _ := strings.Cut(out, " ")
	w, err := strconv.Atoi(f)
	if err != nil {
		t.Fatalf("get weight %s/%s: %q", backend, server, out)
	}
	return w
}

// hpVersionServer answers every request with its name.
func hpVersionServer(t testing.TB, name string) string {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, name)
	}))
	t.Cleanup(s.Close)
	return s.Listener.Addr().String()
}

// hpFrontClient sends requests through HAProxy's frontend on one keep-alive
// connection (MaxConnsPerHost 1, requests one after the other) and counts
// the connections it opens, so a test can show HAProxy balances each request
// and not each connection.
type hpFrontClient struct {
	c     *http.Client
	conns atomic.Int64
}

func newHPFrontClient(p *haproxyProc) *hpFrontClient {
	fc := &hpFrontClient{}
	fc.c = &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", p.front)
			},
			MaxConnsPerHost:     1,
			MaxIdleConnsPerHost: 1,
		},
	}
	return fc
}

// get sends one request and returns the name of the version that answered.
func (fc *hpFrontClient) get(t testing.TB) string {
	t.Helper()
	code, body, err := fc.do()
	if err != nil {
		t.Fatalf("request through haproxy: %v", err)
	}
	if code != 200 {
		t.Fatalf("request through haproxy: status %d: %s", code, body)
	}
	return body
}

// do sends one request; it may run on any goroutine.
func (fc *hpFrontClient) do() (int, string, error) {
	req, _ := http.NewRequest("GET", "http://canary.test/", nil)
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
		GotConn: func(i httptrace.GotConnInfo) {
			if !i.Reused {
				fc.conns.Add(1)
			}
		},
	}))
	resp, err := fc.c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// count sends n requests and counts the answers by version.
func (fc *hpFrontClient) count(t testing.TB, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	for range n {
		got[fc.get(t)]++
	}
	return got
}
