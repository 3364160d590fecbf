package kube

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
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// cluster is a real etcd and kube-apiserver on 127.0.0.1, with TLS from a CA
// made at start, static tokens, RBAC, and the routes' CRDs installed.
type cluster struct {
	dir    string
	server string // https://127.0.0.1:PORT
	caFile string
	// Users (--token-auth-file): admin is in system:masters; canaryd gets
	// testdata/role.yaml's Role in each namespace the tests bind it in;
	// nobody has no binding. certUser is the client certificate's user.
	tokenFiles map[string]string
	certFile   string
	keyFile    string
	certUser   string
	http       *http.Client
	adminToken string
	procs      []*proc
}

// proc is a server process; done closes when it has exited.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
}

// freePort returns a port nothing listens on now. Another process could take
// it before ours binds it; the start fails then, loudly, not silently.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// buildServers runs scripts/kube-apiserver.sh build (at once when the
// binaries are cached) and returns the directory of the binaries.
func buildServers() (string, error) {
	cmd := exec.Command("../../scripts/kube-apiserver.sh", "build")
	cmd.Stderr = os.Stderr // a build from cold takes minutes: show that it is building
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("scripts/kube-apiserver.sh build: %w", err)
	}
	return filepath.Join(strings.TrimSpace(string(out)), "bin"), nil
}

// startCluster builds (or finds cached) kube-apiserver and etcd with
// scripts/kube-apiserver.sh, starts them and waits until the API server is
// ready. stop ends both and removes the data.
func startCluster() (_ *cluster, err error) {
	bin, err := buildServers()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "canaryd-kube-")
	if err != nil {
		return nil, err
	}
	c := &cluster{dir: dir, tokenFiles: map[string]string{}, certUser: "canaryd-cert"}
	defer func() {
		if err != nil {
			c.stop()
		}
	}()
	if err := c.writeCredentials(); err != nil {
		return nil, err
	}

	etcdClient, err := freePort()
	if err != nil {
		return nil, err
	}
	etcdPeer, err := freePort()
	if err != nil {
		return nil, err
	}
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", etcdClient)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", etcdPeer)
	if err := c.spawn("etcd", filepath.Join(bin, "etcd"),
		"--name=canaryd-test",
		"--data-dir="+filepath.Join(dir, "etcd"),
		"--listen-client-urls="+etcdURL, "--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL, "--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=canaryd-test="+peerURL,
		"--unsafe-no-fsync", // a test's data need not survive a power cut
		"--log-level=warn",
	); err != nil {
		return nil, err
	}

	port, err := freePort()
	if err != nil {
		return nil, err
	}
	c.server = fmt.Sprintf("https://127.0.0.1:%d", port)
	if err := c.spawn("kube-apiserver", filepath.Join(bin, "kube-apiserver"),
		"--etcd-servers="+etcdURL,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", port),
		"--tls-cert-file="+filepath.Join(dir, "server.crt"),
		"--tls-private-key-file="+filepath.Join(dir, "server.key"),
		"--client-ca-file="+c.caFile,
		"--token-auth-file="+filepath.Join(dir, "tokens.csv"),
		"--authorization-mode=RBAC",
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file="+filepath.Join(dir, "sa.pub"),
		"--service-account-signing-key-file="+filepath.Join(dir, "sa.key"),
		"--service-cluster-ip-range=10.96.0.0/16",
		"--endpoint-reconciler-type=none", // no kubernetes Service endpoint: nothing runs in this "cluster"
		"--profiling=false",
		"--v=0",
	); err != nil {
		return nil, err
	}

	pool := x509.NewCertPool()
	ca, _ := os.ReadFile(c.caFile)
	pool.AppendCertsFromPEM(ca)
	c.http = &http.Client{Timeout: 30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}

	// Ready: /readyz answers 200 (etcd reached, RBAC's bootstrap roles and
	// the CRD controllers started). A deadline, not a sleep.
	deadline := time.Now().Add(3 * time.Minute)
	for {
		code, body, err := c.raw(http.MethodGet, "/readyz", "", nil)
		if err == nil && code == 200 {
			break
		}
		if err := c.exited(); err != nil {
			return nil, err
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("kube-apiserver not ready after 3 minutes: %d %s %v; log in %s", code, body, err, dir)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return c, nil
}

// spawn starts a server process logging to DIR/NAME.log. It dies with the
// test process (Pdeathsig) even if the test process is killed.
func (c *cluster) spawn(name, bin string, args ...string) error {
	logf, err := os.Create(filepath.Join(c.dir, name+".log"))
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	c.procs = append(c.procs, p)
	go func() { cmd.Wait(); logf.Close(); close(p.done) }()
	return nil
}

// exited reports a server that stopped while we waited for it.
func (c *cluster) exited() error {
	for _, p := range c.procs {
		select {
		case <-p.done:
			log, _ := os.ReadFile(filepath.Join(c.dir, p.name+".log"))
			return fmt.Errorf("%s exited: %v\n%s", p.name, p.cmd.ProcessState, tail(log, 3000))
		default:
		}
	}
	return nil
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// stop ends the servers (SIGTERM, then SIGKILL after 10 s) and removes the
// data directory. The API server goes first: etcd must outlive its client.
func (c *cluster) stop() {
	for i := len(c.procs) - 1; i >= 0; i-- {
		p := c.procs[i]
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			p.cmd.Process.Kill()
			<-p.done
		}
	}
	if c.dir != "" && os.Getenv("KUBE_TEST_KEEP") == "" {
		os.RemoveAll(c.dir)
	}
}

// writeCredentials makes the CA, the server's and a client's certificates,
// the service account signing key and the static token file.
func (c *cluster) writeCredentials() error {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "canaryd-test-ca"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	caCert, _ := x509.ParseCertificate(caDER)
	c.caFile = filepath.Join(c.dir, "ca.crt")
	if err := writePEM(c.caFile, "CERTIFICATE", caDER); err != nil {
		return err
	}
	issue := func(serial int64, name, file string, usage x509.ExtKeyUsage, ips []net.IP, dns []string) error {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: ips, DNSNames: dns,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			return err
		}
		kb, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			return err
		}
		if err := writePEM(file+".crt", "CERTIFICATE", der); err != nil {
			return err
		}
		return writePEM(file+".key", "EC PRIVATE KEY", kb)
	}
	if err := issue(2, "kube-apiserver", filepath.Join(c.dir, "server"), x509.ExtKeyUsageServerAuth,
		[]net.IP{net.IPv4(127, 0, 0, 1)}, []string{"localhost"}); err != nil {
		return err
	}
	if err := issue(3, c.certUser, filepath.Join(c.dir, "client"), x509.ExtKeyUsageClientAuth, nil, nil); err != nil {
		return err
	}
	c.certFile, c.keyFile = filepath.Join(c.dir, "client.crt"), filepath.Join(c.dir, "client.key")

	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	kb, _ := x509.MarshalECPrivateKey(saKey)
	pub, _ := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err := writePEM(filepath.Join(c.dir, "sa.key"), "EC PRIVATE KEY", kb); err != nil {
		return err
	}
	if err := writePEM(filepath.Join(c.dir, "sa.pub"), "PUBLIC KEY", pub); err != nil {
		return err
	}

	var csv strings.Builder
	for i, u := range []struct{ user, groups string }{
		{"admin", "system:masters"}, {"canaryd", ""}, {"nobody", ""},
	} {
		tok := make([]byte, 16)
		rand.Read(tok)
		t := fmt.Sprintf("%s-%x", u.user, tok)
		fmt.Fprintf(&csv, "%s,%s,%d,%q\n", t, u.user, 1000+i, u.groups)
		file := filepath.Join(c.dir, u.user+".token")
		if err := os.WriteFile(file, []byte(t+"\n"), 0o600); err != nil {
			return err
		}
		c.tokenFiles[u.user] = file
		if u.user == "admin" {
			c.adminToken = t
		}
	}
	return os.WriteFile(filepath.Join(c.dir, "tokens.csv"), []byte(csv.String()), 0o600)
}

func writePEM(file, typ string, der []byte) error {
	return os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}

// raw sends one request as admin.
func (c *cluster) raw(method, path, contentType string, body []byte) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, c.server+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.adminToken)
	req.Header.Set("Accept", "application/json")
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// do sends one request as admin and decodes the answer; any status but
// want fails the test.
func (c *cluster) do(t testing.TB, method, path, contentType string, body any, want int) map[string]any {
	t.Helper()
	var b []byte
	switch x := body.(type) {
	case nil:
	case []byte:
		b = x
	default:
		var err error
		if b, err = json.Marshal(x); err != nil {
			t.Fatal(err)
		}
	}
	code, out, err := c.raw(method, path, contentType, b)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	if code != want {
		t.Fatalf("%s %s: %d %s; want %d", method, path, code, out, want)
	}
	var obj map[string]any
	if len(out) > 0 {
		dec := json.NewDecoder(bytes.NewReader(out))
		dec.UseNumber()
		if err := dec.Decode(&obj); err != nil {
			t.Fatalf("%s %s: decode: %v", method, path, err)
		}
	}
	return obj
}

// apply server-side applies obj as manager (force: false).
func (c *cluster) apply(t testing.TB, path, manager string, obj any, want int) map[string]any {
	t.Helper()
	return c.do(t, http.MethodPatch, path+"?fieldManager="+manager, "application/apply-patch+yaml", obj, want)
}
