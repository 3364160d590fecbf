package deploy

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/inferensys/canaryd/internal/canarydtest"
)

// kubernetesVersion is the Kubernetes release whose schemas the manifests
// must satisfy: the oldest one they are meant for.
const kubernetesVersion = "1.33.0"

var tmpDir string

func TestMain(m *testing.M) {
	var err error
	if tmpDir, err = os.MkdirTemp("", "canaryd-deploy-test"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(tmpDir)
	canarydtest.Cleanup()
	os.Exit(code)
}

// python returns $CANARYD_PYTHON (an interpreter with kubernetes-validate:
// `make test` sets it from scripts/pydeps.sh), or skips the test.
func python(t *testing.T) string {
	t.Helper()
	py := os.Getenv("CANARYD_PYTHON")
	if py == "" {
		t.Skip("CANARYD_PYTHON is unset: the Kubernetes schema check needs kubernetes-validate " +
			"(run `make test`, or CANARYD_PYTHON=$(scripts/pydeps.sh) go test ./deploy/)")
	}
	return py
}

// validateManifests runs kubernetes-validate in strict mode (unknown fields
// are errors) against kubernetesVersion's schemas on files, and returns an
// error with its report when it finds anything wrong.
func validateManifests(py string, files ...string) error {
	args := append([]string{"-m", "kubernetes_validate", "--strict", "--quiet", "-k", kubernetesVersion}, files...)
	out, err := exec.Command(py, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("kubernetes-validate %s: %v\n%s", strings.Join(files, " "), err, out)
	}
	if s := strings.TrimSpace(string(out)); s != "" {
		// --quiet prints only warnings and failures.
		return fmt.Errorf("kubernetes-validate %s:\n%s", strings.Join(files, " "), s)
	}
	return nil
}

// kustomization is the part of kubernetes/kustomization.yaml the tests read.
type kustomization struct {
	Resources []string `yaml:"resources"`
}

// manifests returns the resources kubernetes/kustomization.yaml lists, and
// fails the test unless they are exactly the other YAML files there.
func manifests(t *testing.T) []string {
	t.Helper()
	var k kustomization
	readYAML(t, "kubernetes/kustomization.yaml", &k)
	files, err := filepath.Glob("kubernetes/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, f := range files {
		if filepath.Base(f) != "kustomization.yaml" {
			want = append(want, filepath.Base(f))
		}
	}
	if got := slices.Sorted(slices.Values(k.Resources)); !slices.Equal(got, want) {
		t.Fatalf("kustomization.yaml lists %v; the directory holds %v", got, want)
	}
	out := make([]string, len(k.Resources))
	for i, r := range k.Resources {
		out[i] = filepath.Join("kubernetes", r)
	}
	return out
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// TestKubernetesManifests validates every manifest of the kustomization, and
// what `kubectl kustomize` makes of them where kubectl is installed.
func TestKubernetesManifests(t *testing.T) {
	py := python(t)
	files := manifests(t)
	if err := validateManifests(py, files...); err != nil {
		t.Error(err)
	}
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Log("kubectl not installed: the kustomization's output is not validated")
		return
	}
	out, err := exec.Command(kubectl, "kustomize", "kubernetes").Output()
	if err != nil {
		t.Fatalf("kubectl kustomize kubernetes: %v", err)
	}
	built := filepath.Join(t.TempDir(), "built.yaml")
	if err := os.WriteFile(built, out, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := validateManifests(py, built); err != nil {
		t.Errorf("the kustomization's output: %v", err)
	}
}

// TestKubernetesCheckCanFail feeds broken manifests to validateManifests: a
// check that passes everything would pass these too.
func TestKubernetesCheckCanFail(t *testing.T) {
	py := python(t)
	for name, doc := range map[string]string{
		"wrong type": "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: x}\n" +
			"spec:\n  replicas: two\n  serviceName: x\n  selector: {matchLabels: {a: b}}\n" +
			"  template: {metadata: {labels: {a: b}}, spec: {containers: [{name: c, image: i}]}}\n",
		"unknown field (strict)": "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: x}\n" +
			"spec: {maxUnavailable: 1, selector: {matchLabels: {a: b}}, maxUnavailabel: 2}\n",
		"missing required field": "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {ports: [{name: http}]}\n",
	} {
		f := filepath.Join(t.TempDir(), "broken.yaml")
		if err := os.WriteFile(f, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		err := validateManifests(py, f)
		if err == nil {
			t.Errorf("%s: the broken manifest passed", name)
			continue
		}
		t.Logf("%s: %v", name, err)
	}
}

// The canaryd binary, built once with the Dockerfile's own build command.
var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// canaryd returns the binary built as deploy/Dockerfile builds it.
func canaryd(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		text, err := os.ReadFile("Dockerfile")
		if err != nil {
			buildErr = err
			return
		}
		env, args, err := dockerBuildCommand(string(text))
		if err != nil {
			buildErr = err
			return
		}
		// The same command, writing into the test's directory.
		if i := slices.Index(args, "-o"); i >= 0 && i+1 < len(args) {
			binPath = filepath.Join(tmpDir, "canaryd")
			args[i+1] = binPath
		} else {
			buildErr = fmt.Errorf("the Dockerfile's go build has no -o: %q", args)
			return
		}
		start := time.Now()
		cmd := exec.Command("go", args[1:]...)
		cmd.Dir = ".."
		cmd.Env = append(os.Environ(), env...)
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("%s go %s: %v\n%s", strings.Join(env, " "), strings.Join(args[1:], " "), err, out)
			return
		}
		t.Logf("built canaryd as the Dockerfile does (%s go %q) in %v", strings.Join(env, " "), args[1:], time.Since(start).Round(time.Millisecond))
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// runVariables returns the environment variables of `canaryd run`: the
// bracketed names in its --help.
func runVariables(t *testing.T) map[string]bool { return commandVariables(t, "run") }

// commandVariables returns the CANARYD_ variables `canaryd CMD --help` names.
func commandVariables(t *testing.T, cmd string) map[string]bool {
	t.Helper()
	out, _ := exec.Command(canaryd(t), cmd, "--help").CombinedOutput() // exit status 0 or 2, depending on the flag package
	vars := map[string]bool{}
	for _, m := range regexp.MustCompile(`\[(CANARYD_[A-Z0-9_]+)\]`).FindAllStringSubmatch(string(out), -1) {
		vars[m[1]] = true
	}
	if len(vars) < 10 {
		t.Fatalf("canaryd %s --help names %d variables: %v\n%s", cmd, len(vars), vars, out)
	}
	return vars
}

// testVariables are the variables of the tests, not of canaryd, that the
// deployment files may name.
var testVariables = map[string]bool{"CANARYD_PYTHON": true}

// TestVariablesAreCanarydRun: every CANARYD_ variable the deployment files
// name (settings, comments, the README) is one that `canaryd run` reads, so
// that none is silently ignored.
func TestVariablesAreCanarydRun(t *testing.T) {
	vars := runVariables(t)
	files := []string{"Dockerfile", "README.md", "systemd/canaryd.env", "systemd/canaryd.service"}
	k, err := filepath.Glob("kubernetes/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, k...)
	used, bad := 0, false
	for _, f := range files {
		var unknown []string
		for _, v := range regexp.MustCompile(`CANARYD_[A-Z][A-Z0-9_]*`).FindAllString(readFile(t, f), -1) {
			used++
			if !vars[v] && !testVariables[v] && !slices.Contains(unknown, v) {
				unknown = append(unknown, v)
			}
		}
		if len(unknown) > 0 {
			bad = true
			t.Errorf("%s names %v, which canaryd run does not read", f, unknown)
		}
	}
	if bad {
		t.Logf("canaryd run --help names %v", slices.Sorted(maps.Keys(vars)))
	}
	if used == 0 {
		t.Fatal("no CANARYD_ variable found in the deployment files")
	}
}

// TestRouterManifests: deploy/router's manifests are valid Kubernetes
// objects, name only variables `canaryd route` reads, and its example
// routes file passes `canaryd validate --routes`.
func TestRouterManifests(t *testing.T) {
	if err := validateManifests(python(t), "router/rbac.yaml", "router/deployment.yaml"); err != nil {
		t.Error(err)
	}
	vars := commandVariables(t, "route")
	for _, f := range []string{"router/deployment.yaml", "router/routes.yaml"} {
		for _, v := range regexp.MustCompile(`CANARYD_[A-Z][A-Z0-9_]*`).FindAllString(readFile(t, f), -1) {
			if !vars[v] {
				t.Errorf("%s names %s, which canaryd route does not read", f, v)
			}
		}
	}
	out, err := exec.Command(canaryd(t), "validate", "--routes", "router/routes.yaml").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "5 routes: kubernetes billing-agent, git research-agent, kubernetes search-agent, haproxy support-agent, kubernetes triage-agent: ok") {
		t.Errorf("canaryd validate --routes router/routes.yaml: %v\n%s", err, out)
	}
}

// dockerStage is one FROM … stage of a Dockerfile: its base and its
// instructions (continuation lines joined).
type dockerStage struct {
	from, name string
	instr      []string // "RUN …", "USER …", …
}

func parseDockerfile(text string) []dockerStage {
	var stages []dockerStage
	var cur strings.Builder
	flush := func() {
		line := strings.TrimSpace(cur.String())
		cur.Reset()
		if line == "" {
			return
		}
		kw, rest, _ := strings.Cut(line, " ")
		if strings.EqualFold(kw, "FROM") {
			f := strings.Fields(rest)
			st := dockerStage{from: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				st.name = f[2]
			}
			stages = append(stages, st)
			return
		}
		if len(stages) > 0 {
			stages[len(stages)-1].instr = append(stages[len(stages)-1].instr, strings.ToUpper(kw)+" "+strings.TrimSpace(rest))
		}
	}
	for _, l := range strings.Split(text, "\n") {
		if t := strings.TrimSpace(l); strings.HasPrefix(t, "#") {
			continue
		}
		if s, ok := strings.CutSuffix(strings.TrimRight(l, " \t"), "\\"); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(l)
		flush()
	}
	flush()
	return stages
}

// words splits a shell command line into words, honouring double and
// single quotes (enough for a Dockerfile's RUN line).
func words(s string) []string {
	var out []string
	var w strings.Builder
	in, quote := false, rune(0)
	for _, r := range s {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			w.WriteRune(r)
		case r == '"' || r == '\'':
			quote, in = r, true
		case r == ' ' || r == '\t':
			if in {
				out = append(out, w.String())
				w.Reset()
				in = false
			}
		default:
			w.WriteRune(r)
			in = true
		}
	}
	if in {
		out = append(out, w.String())
	}
	return out
}

// dockerBuildCommand returns the environment assignments and the words
// ("go", "build", …) of the RUN instruction that builds canaryd.
func dockerBuildCommand(text string) (env, args []string, err error) {
	for _, st := range parseDockerfile(text) {
		for _, in := range st.instr {
			run, ok := strings.CutPrefix(in, "RUN ")
			if !ok || !strings.Contains(run, "go build") {
				continue
			}
			w := words(run)
			for len(w) > 0 && strings.Contains(w[0], "=") {
				env, w = append(env, w[0]), w[1:]
			}
			return env, w, nil
		}
	}
	return nil, nil, errors.New("no RUN … go build in the Dockerfile")
}

// checkDockerfile returns what is wrong with a Dockerfile for canaryd's
// image: the binary must be built static (CGO_ENABLED=0, -trimpath), the
// final stage must hold no libc (scratch or distroless/static), run as a
// numeric non-root user, expose 8080 and start "canaryd run".
func checkDockerfile(text string) error {
	var errs []error
	stages := parseDockerfile(text)
	if len(stages) < 2 {
		return fmt.Errorf("%d stages; want a build stage and a final one", len(stages))
	}
	env, args, err := dockerBuildCommand(text)
	if err != nil {
		errs = append(errs, err)
	} else {
		if !slices.Contains(env, "CGO_ENABLED=0") {
			errs = append(errs, fmt.Errorf("go build without CGO_ENABLED=0 (env %q): the binary may need libc", env))
		}
		if !slices.Contains(args, "-trimpath") {
			errs = append(errs, fmt.Errorf("go build without -trimpath: %q", args))
		}
	}
	if b := stages[0].from; !strings.HasPrefix(b, "golang:1.26") {
		errs = append(errs, fmt.Errorf("build stage FROM %s; want golang:1.26 (go.mod's Go)", b))
	}
	final := stages[len(stages)-1]
	if f := final.from; f != "scratch" && !strings.HasPrefix(f, "gcr.io/distroless/static") {
		errs = append(errs, fmt.Errorf("final stage FROM %s; want scratch or gcr.io/distroless/static*", f))
	}
	var user, expose, entry string
	for _, in := range final.instr {
		kw, rest, _ := strings.Cut(in, " ")
		switch kw {
		case "USER":
			user = rest
		case "EXPOSE":
			expose = rest
		case "ENTRYPOINT":
			entry = rest
		}
	}
	uid, _, _ := strings.Cut(user, ":")
	if n, err := strconv.Atoi(uid); err != nil || n == 0 {
		errs = append(errs, fmt.Errorf("final stage USER %q; want a numeric non-root uid (Kubernetes' runAsNonRoot checks numbers only)", user))
	}
	if !slices.Contains(strings.Fields(expose), "8080") {
		errs = append(errs, fmt.Errorf("final stage EXPOSE %q; want 8080", expose))
	}
	if !regexp.MustCompile(`^\["[^"]*canaryd",\s*"run"\]$`).MatchString(entry) {
		errs = append(errs, fmt.Errorf("ENTRYPOINT %s; want [\".../canaryd\", \"run\"]", entry))
	}
	return errors.Join(errs...)
}

// TestDockerfile checks deploy/Dockerfile (the image itself cannot be built
// here: there is no container runtime) and that the binary its build
// command makes is static: no ELF interpreter, no shared libraries.
func TestDockerfile(t *testing.T) {
	if err := checkDockerfile(readFile(t, "Dockerfile")); err != nil {
		t.Errorf("deploy/Dockerfile: %v", err)
	}
	f, err := elf.Open(canaryd(t))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("the binary has an ELF interpreter: it is dynamically linked")
		}
	}
	if libs, err := f.ImportedLibraries(); err != nil || len(libs) > 0 {
		t.Errorf("the binary needs shared libraries %v (%v)", libs, err)
	}
}

// TestDockerfileCheckCanFail: checkDockerfile refuses images that are not
// static or run as root.
func TestDockerfileCheckCanFail(t *testing.T) {
	good := readFile(t, "Dockerfile")
	for name, bad := range map[string]string{
		"cgo":       strings.Replace(good, "CGO_ENABLED=0 ", "", 1),
		"no trim":   strings.Replace(good, " -trimpath", "", 1),
		"libc base": strings.Replace(good, "gcr.io/distroless/static-debian12:nonroot", "debian:12-slim", 1),
		"root":      strings.Replace(good, "USER 65532:65532", "USER root", 1),
		"no user":   strings.Replace(good, "USER 65532:65532", "", 1),
		"no run":    strings.Replace(good, `, "run"]`, `]`, 1),
	} {
		if bad == good {
			t.Fatalf("%s: the mutation changed nothing: update the test with the Dockerfile", name)
		}
		if err := checkDockerfile(bad); err == nil {
			t.Errorf("%s: checkDockerfile passed it", name)
		}
	}
}

// verifyUnit runs `systemd-analyze verify` on unit, with its ExecStart
// binary replaced by bin (verify requires it to exist), and returns an error
// when verify fails or prints anything: it reports unknown keys and bad
// values as warnings with exit status 0.
func verifyUnit(analyze, unit, bin string) error {
	dir, err := os.MkdirTemp(tmpDir, "unit")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	text := strings.ReplaceAll(unit, "/usr/local/bin/canaryd", bin)
	path := filepath.Join(dir, "canaryd.service")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		return err
	}
	out, err := exec.Command(analyze, "verify", path).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		return fmt.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	return nil
}

// TestSystemdUnit verifies deploy/systemd/canaryd.service, its hardening,
// and that systemd waits longer on stop than canaryd's shutdown timeout.
func TestSystemdUnit(t *testing.T) {
	unit := readFile(t, "systemd/canaryd.service")
	env := readFile(t, "systemd/canaryd.env")
	for _, want := range []string{"DynamicUser=yes", "StateDirectory=canaryd", "ProtectSystem=strict", "NoNewPrivileges=yes",
		"Restart=on-failure", "CapabilityBoundingSet=\n", "EnvironmentFile=/etc/canaryd/canaryd.env", "ExecStart=/usr/local/bin/canaryd run\n"} {
		if !strings.Contains(unit, want) {
			t.Errorf("canaryd.service lacks %q", strings.TrimSpace(want))
		}
	}
	stop := setting(t, unit, "TimeoutStopSec")
	shutdown := setting(t, env, "CANARYD_SHUTDOWN_TIMEOUT")
	if stop <= shutdown {
		t.Errorf("TimeoutStopSec %v ≤ CANARYD_SHUTDOWN_TIMEOUT %v: systemd kills canaryd before it has flushed", stop, shutdown)
	}
	if dir := envValue(env, "CANARYD_STATE_DIR"); dir != "/var/lib/canaryd" {
		t.Errorf("CANARYD_STATE_DIR=%s; want /var/lib/canaryd (StateDirectory=canaryd)", dir)
	}

	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed: the unit is not verified")
	}
	if err := verifyUnit(analyze, unit, canaryd(t)); err != nil {
		t.Error(err)
	}
	// The check can fail: a misspelt key and a bad value are only warnings
	// to systemd.
	for _, bad := range []string{
		strings.Replace(unit, "ProtectSystem=strict", "ProtectSystm=strict", 1),
		strings.Replace(unit, "Restart=on-failure", "Restart=sometimes", 1),
	} {
		if err := verifyUnit(analyze, bad, canaryd(t)); err == nil {
			t.Error("a broken unit passed systemd-analyze verify")
		}
	}
}

// envValue returns KEY's value in an environment file (last assignment).
func envValue(text, key string) string {
	v := ""
	for _, l := range strings.Split(text, "\n") {
		if k, val, ok := strings.Cut(strings.TrimSpace(l), "="); ok && k == key {
			v = val
		}
	}
	return v
}

// setting returns a duration setting (KEY=30s) of a unit or env file.
func setting(t *testing.T, text, key string) time.Duration {
	t.Helper()
	v := envValue(text, key)
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("%s=%q: %v", key, v, err)
	}
	return d
}

// The parts of the manifests that TestKubernetesConsistent reads.
type (
	configMap struct {
		Metadata struct{ Name string } `yaml:"metadata"`
		Data     map[string]string     `yaml:"data"`
	}
	statefulSet struct {
		Spec struct {
			Template struct {
				Spec struct {
					TerminationGracePeriodSeconds int `yaml:"terminationGracePeriodSeconds"`
					Containers                    []struct {
						Ports []struct {
							ContainerPort int `yaml:"containerPort"`
						} `yaml:"ports"`
						VolumeMounts []struct {
							Name      string `yaml:"name"`
							MountPath string `yaml:"mountPath"`
						} `yaml:"volumeMounts"`
					} `yaml:"containers"`
					Volumes []struct {
						Name      string `yaml:"name"`
						ConfigMap *struct {
							Name string `yaml:"name"`
						} `yaml:"configMap"`
					} `yaml:"volumes"`
				} `yaml:"spec"`
			} `yaml:"template"`
			VolumeClaimTemplates []struct {
				Metadata struct{ Name string } `yaml:"metadata"`
			} `yaml:"volumeClaimTemplates"`
		} `yaml:"spec"`
	}
)

// TestKubernetesConsistent: the settings agree with the StatefulSet (paths
// under their mounts, the HTTP port, the grace period above the shutdown
// timeout), the ConfigMaps' specs and model table are copies of
// deploy/rollouts/ and deploy/models.yaml, and canaryd validate accepts them.
func TestKubernetesConsistent(t *testing.T) {
	var env, rollouts, models configMap
	var sts statefulSet
	readYAML(t, "kubernetes/configmap-env.yaml", &env)
	readYAML(t, "kubernetes/configmap-rollouts.yaml", &rollouts)
	readYAML(t, "kubernetes/configmap-models.yaml", &models)
	readYAML(t, "kubernetes/statefulset.yaml", &sts)
	pod := sts.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers; want 1", len(pod.Containers))
	}
	c := pod.Containers[0]
	mounts := map[string]string{} // volume → path
	for _, m := range c.VolumeMounts {
		mounts[m.Name] = m.MountPath
	}
	configMaps := map[string]string{} // config map → volume
	for _, v := range pod.Volumes {
		if v.ConfigMap != nil {
			configMaps[v.ConfigMap.Name] = v.Name
		}
	}
	under := func(key, volume string) {
		t.Helper()
		p, m := env.Data[key], mounts[volume]
		if m == "" || (p != m && !strings.HasPrefix(p, m+"/")) {
			t.Errorf("%s=%s is not on volume %s (mounted at %q)", key, p, volume, m)
		}
	}
	if len(sts.Spec.VolumeClaimTemplates) != 1 {
		t.Fatalf("%d volume claim templates; want 1 (the state dir)", len(sts.Spec.VolumeClaimTemplates))
	}
	under("CANARYD_STATE_DIR", sts.Spec.VolumeClaimTemplates[0].Metadata.Name)
	under("CANARYD_SPECS", configMaps[rollouts.Metadata.Name])
	under("CANARYD_MODELS", configMaps[models.Metadata.Name])
	for _, k := range []string{"CANARYD_SIGN_KEY_FILE", "CANARYD_SASL_PASSWORD_FILE", "CANARYD_TLS_CA_FILE"} {
		if env.Data[k] != "" {
			under(k, "secrets")
		}
	}
	if env.Data["CANARYD_SPECS"] != mounts[configMaps[rollouts.Metadata.Name]] {
		t.Errorf("CANARYD_SPECS=%s; want the rollouts ConfigMap's mount itself", env.Data["CANARYD_SPECS"])
	}
	_, port, _ := strings.Cut(env.Data["CANARYD_HTTP"], ":")
	if len(c.Ports) != 1 || strconv.Itoa(c.Ports[0].ContainerPort) != port {
		t.Errorf("CANARYD_HTTP=%s; container ports %v", env.Data["CANARYD_HTTP"], c.Ports)
	}
	shutdown, err := time.ParseDuration(env.Data["CANARYD_SHUTDOWN_TIMEOUT"])
	if err != nil {
		t.Fatalf("CANARYD_SHUTDOWN_TIMEOUT: %v", err)
	}
	if grace := time.Duration(pod.TerminationGracePeriodSeconds) * time.Second; grace <= shutdown {
		t.Errorf("terminationGracePeriodSeconds %v ≤ CANARYD_SHUTDOWN_TIMEOUT %v: the kubelet kills canaryd before it has flushed", grace, shutdown)
	}

	// The ConfigMaps hold copies: equal to the originals, file by file.
	specs, err := filepath.Glob("rollouts/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range specs {
		names = append(names, filepath.Base(f))
		if got, want := rollouts.Data[filepath.Base(f)], readFile(t, f); got != want {
			t.Errorf("configmap-rollouts.yaml's %s differs from deploy/%s: copy it again", filepath.Base(f), f)
		}
	}
	if got := slices.Sorted(maps.Keys(rollouts.Data)); !slices.Equal(got, names) {
		t.Errorf("configmap-rollouts.yaml holds %v; deploy/rollouts/ holds %v", got, names)
	}
	if models.Data["models.yaml"] != readFile(t, "models.yaml") {
		t.Errorf("configmap-models.yaml's models.yaml differs from deploy/models.yaml: copy it again")
	}

	// What the pod will read, canaryd accepts.
	dir := t.TempDir()
	for name, text := range rollouts.Data {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mfile := filepath.Join(t.TempDir(), "models.yaml")
	if err := os.WriteFile(mfile, []byte(models.Data["models.yaml"]), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(canaryd(t), "validate", "--models", mfile, dir).CombinedOutput(); err != nil {
		t.Errorf("canaryd validate of the ConfigMaps' specs and models: %v\n%s", err, out)
	}
}
