package daemon_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"
)

// A WebDriver client of just what the status page test needs: chromedriver
// (Debian's chromium-driver) drives headless Chromium, over its HTTP API
// (W3C WebDriver, plus chromedriver's goog/cdp/execute for the DevTools
// commands WebDriver has no word for: a mobile viewport, a full-page
// screenshot). Plain net/http: no dependency.

// chromiumPaths returns Debian's chromium and chromedriver. When either is
// missing the test fails as root on Debian (make deps installs them with
// apt-get, and .ci/run calls make deps), and is skipped elsewhere, saying
// what to install.
func chromiumPaths(t *testing.T) (browser, driver string) {
	t.Helper()
	var missing []string
	for _, name := range []string{"chromium", "chromedriver"} {
		p, err := exec.LookPath(name)
		if err != nil {
			missing = append(missing, name)
			continue
		}
		if name == "chromium" {
			browser = p
		} else {
			driver = p
		}
	}
	if len(missing) == 0 {
		return browser, driver
	}
	msg := fmt.Sprintf("%s not installed: apt-get install chromium chromium-driver (make deps does it as root)", strings.Join(missing, " and "))
	if _, err := os.Stat("/etc/debian_version"); err == nil && os.Geteuid() == 0 && runtime.GOOS == "linux" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return "", ""
}

type webDriver struct {
	base string
	hc   *http.Client
}

// startChromedriver runs chromedriver on a free loopback port until the
// test ends.
func startChromedriver(t *testing.T, driver string) *webDriver {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	var logBuf bytes.Buffer
	cmd := exec.Command(driver, fmt.Sprintf("--port=%d", port), "--allowed-ips=127.0.0.1")
	cmd.Stdout, cmd.Stderr = &logBuf, &logBuf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start chromedriver: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	wd := &webDriver{base: fmt.Sprintf("http://127.0.0.1:%d", port), hc: &http.Client{Timeout: 60 * time.Second}}
	deadline := time.Now().Add(30 * time.Second)
	for {
		var st struct {
			Ready bool `json:"ready"`
		}
		if err := wd.do("GET", "/status", nil, &st); err == nil && st.Ready {
			return wd
		}
		select {
		case err := <-exited:
			t.Fatalf("chromedriver exited: %v\n%s", err, logBuf.String())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("chromedriver not ready after 30s\n%s", logBuf.String())
		}
	}
}

// do calls the WebDriver API and decodes the reply's value into out.
func (wd *webDriver) do(method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, wd.base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := wd.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	var reply struct {
		Value json.RawMessage `json:"value"`
	}
	if err := json.Unmarshal(b, &reply); err != nil {
		return fmt.Errorf("%s %s: %s: %.300s", method, path, resp.Status, b)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error, Message string }
		_ = json.Unmarshal(reply.Value, &e)
		return fmt.Errorf("%s %s: %s: %s: %.500s", method, path, resp.Status, e.Error, e.Message)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(reply.Value, out)
}

type browserSession struct {
	wd *webDriver
	id string
}

// session starts headless Chromium with a window of width×height CSS
// pixels, closed when the test ends.
func (wd *webDriver) session(t *testing.T, browser string, width, height int) *browserSession {
	t.Helper()
	args := []string{"--headless=new", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
		"--force-device-scale-factor=1", "--hide-scrollbars", fmt.Sprintf("--window-size=%d,%d", width, height),
		"--lang=en-US"}
	if os.Geteuid() == 0 {
		args = append(args, "--no-sandbox") // Chromium refuses to run its sandbox as root
	}
	caps := map[string]any{"capabilities": map[string]any{"alwaysMatch": map[string]any{
		"browserName":        "chrome",
		"goog:chromeOptions": map[string]any{"binary": browser, "args": args},
		"goog:loggingPrefs":  map[string]string{"browser": "ALL"},
	}}}
	var out struct {
		SessionID    string         `json:"sessionId"`
		Capabilities map[string]any `json:"capabilities"`
	}
	if err := wd.do("POST", "/session", caps, &out); err != nil {
		t.Fatalf("start Chromium: %v", err)
	}
	t.Logf("Chromium %v, headless, %d×%d", out.Capabilities["browserVersion"], width, height)
	s := &browserSession{wd: wd, id: out.SessionID}
	t.Cleanup(func() {
		if err := wd.do("DELETE", "/session/"+s.id, nil, nil); err != nil {
			t.Logf("close Chromium: %v", err)
		}
	})
	return s
}

func (s *browserSession) navigate(t *testing.T, url string) {
	t.Helper()
	if err := s.wd.do("POST", "/session/"+s.id+"/url", map[string]string{"url": url}, nil); err != nil {
		t.Fatalf("navigate to %s: %v", url, err)
	}
}

// run runs a script's body in the page (WebDriver's execute/sync: its
// return value comes back as JSON) and decodes the result into out.
func (s *browserSession) run(script string, out any) error {
	return s.wd.do("POST", "/session/"+s.id+"/execute/sync", map[string]any{"script": script, "args": []any{}}, out)
}

// click clicks the element the CSS selector finds first.
//
// The page re-renders its lists at each poll: an element found just before
// a poll is stale by the click, so a stale element is found again (a few
// times at most).
func (s *browserSession) click(t *testing.T, css string) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		var el map[string]string // {"element-6066-11e4-a52e-4f735466cecf": id}
		if err := s.wd.do("POST", "/session/"+s.id+"/element", map[string]string{"using": "css selector", "value": css}, &el); err != nil {
			t.Fatalf("find %s: %v", css, err)
		}
		if len(el) == 0 {
			t.Fatalf("find %s: no element id in %v", css, el)
		}
		var err error
		for _, id := range el {
			err = s.wd.do("POST", "/session/"+s.id+"/element/"+id+"/click", map[string]any{}, nil)
		}
		switch {
		case err == nil:
			return
		case strings.Contains(err.Error(), "stale element") && attempt < 5:
			continue
		default:
			t.Fatalf("click %s: %v", css, err)
		}
	}
}

// cdp sends a Chrome DevTools Protocol command.
func (s *browserSession) cdp(cmd string, params map[string]any, out any) error {
	return s.wd.do("POST", "/session/"+s.id+"/goog/cdp/execute", map[string]any{"cmd": cmd, "params": params}, out)
}

// viewport makes the page's viewport width×height CSS pixels (mobile: a
// phone's, with its viewport meta tag honoured).
func (s *browserSession) viewport(t *testing.T, width, height int, mobile bool) {
	t.Helper()
	if err := s.cdp("Emulation.setDeviceMetricsOverride", map[string]any{
		"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}, nil); err != nil {
		t.Fatalf("viewport %d×%d: %v", width, height, err)
	}
}

// screenshot returns a PNG of the whole page, beyond the viewport.
func (s *browserSession) screenshot(t *testing.T) []byte {
	t.Helper()
	var m struct {
		CSSContentSize struct{ Width, Height float64 } `json:"cssContentSize"`
	}
	if err := s.cdp("Page.getLayoutMetrics", map[string]any{}, &m); err != nil {
		t.Fatalf("layout metrics: %v", err)
	}
	var shot struct{ Data string }
	if err := s.cdp("Page.captureScreenshot", map[string]any{"format": "png", "captureBeyondViewport": true,
		"clip": map[string]any{"x": 0, "y": 0, "width": m.CSSContentSize.Width, "height": m.CSSContentSize.Height, "scale": 1}}, &shot); err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	b, err := base64.StdEncoding.DecodeString(shot.Data)
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	return b
}

// consoleErrors returns the page's console messages of level SEVERE
// (uncaught exceptions, failed loads) since the last call.
func (s *browserSession) consoleErrors() ([]string, error) {
	var entries []struct{ Level, Message string }
	if err := s.wd.do("POST", "/session/"+s.id+"/se/log", map[string]string{"type": "browser"}, &entries); err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if e.Level == "SEVERE" {
			out = append(out, e.Message)
		}
	}
	return out, nil
}

// waitPage polls the page with script (which returns an object decoded
// into a fresh *T) until done accepts it or timeout passes, and returns the
// last state.
func waitPage[T any](t *testing.T, s *browserSession, timeout time.Duration, what, script string, done func(*T) bool) *T {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last *T
	var lastErr error
	for time.Now().Before(deadline) {
		v := new(T)
		if lastErr = s.run(script, v); lastErr == nil {
			last = v
			if done(v) {
				return v
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("page: %s not after %s; last state %+v, error %v", what, timeout, last, lastErr)
	return nil
}
