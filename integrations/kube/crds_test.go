package kube

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	apiext "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextinstall "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/install"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextv1beta1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1beta1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	// The modules whose CRDs the tests install, read from the module cache:
	// imported so that go.mod pins them (and go mod download fetches them).
	// Small packages with no dependencies of their own.
	_ "github.com/servicemeshinterface/smi-sdk-go/pkg/apis/split"
	_ "istio.io/api/label"
	gatewayconsts "sigs.k8s.io/gateway-api/pkg/consts"
)

// The official CRDs, by module and path in it.
const (
	gatewayModule = "sigs.k8s.io/gateway-api"
	httpRouteCRD  = "config/crd/standard/gateway.networking.k8s.io_httproutes.yaml"
	istioModule   = "istio.io/api"
	istioCRDs     = "kubernetes/customresourcedefinitions.gen.yaml"
	smiModule     = "github.com/servicemeshinterface/smi-sdk-go"
	smiSplitCRD   = "crds/split.yaml"
)

// moduleDir is where go.mod's version of mod is in the module cache.
func moduleDir(mod string) (string, error) {
	out, err := exec.Command("go", "list", "-m", "-json", mod).Output()
	if err != nil {
		return "", fmt.Errorf("go list -m %s: %w", mod, err)
	}
	var m struct{ Dir, Version string }
	if err := json.Unmarshal(out, &m); err != nil {
		return "", err
	}
	if m.Dir == "" {
		if out, err := exec.Command("go", "mod", "download", mod).CombinedOutput(); err != nil {
			return "", fmt.Errorf("go mod download %s: %v: %s", mod, err, out)
		}
		return moduleDir(mod)
	}
	return m.Dir, nil
}

// crdFile reads one CRD from a YAML file of one or more documents, as JSON.
func crdFile(mod, path, name string) ([]byte, error) {
	dir, err := moduleDir(mod)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(dir, path))
	if err != nil {
		return nil, err
	}
	for _, doc := range strings.Split(string(b), "\n---\n") {
		j, err := yaml.YAMLToJSON([]byte(doc))
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", mod, path, err)
		}
		var meta struct {
			Kind     string
			Metadata struct{ Name string }
		}
		if json.Unmarshal(j, &meta) == nil && meta.Kind == "CustomResourceDefinition" && meta.Metadata.Name == name {
			return j, nil
		}
	}
	return nil, fmt.Errorf("%s %s: no CRD %s", mod, path, name)
}

// trafficSplitCRD is smi-sdk-go's TrafficSplit CRD (the SMI project's own,
// written for apiextensions.k8s.io/v1beta1, which API servers stopped
// serving in 1.22) converted to v1 by apiextensions' own conversion, with
// what v1 demands and v1beta1 did not: a structural schema (type: object at
// the root) and preserveUnknownFields false. It serves v1alpha4 (its storage
// version) as published, and v1alpha2 too, as Linkerd's SMI extension does
// (Linkerd's chart carries the same schema under apiextensions v1, serving
// v1alpha1 and v1alpha2).
func trafficSplitCRD() ([]byte, error) {
	j, err := crdFile(smiModule, smiSplitCRD, "trafficsplits.split.smi-spec.io")
	if err != nil {
		return nil, err
	}
	scheme := runtime.NewScheme()
	apiextinstall.Install(scheme)
	var old apiextv1beta1.CustomResourceDefinition
	if err := json.Unmarshal(j, &old); err != nil {
		return nil, err
	}
	scheme.Default(&old)
	var internal apiext.CustomResourceDefinition
	if err := scheme.Convert(&old, &internal, nil); err != nil {
		return nil, fmt.Errorf("convert TrafficSplit CRD: %w", err)
	}
	var crd apiextv1.CustomResourceDefinition
	if err := scheme.Convert(&internal, &crd, nil); err != nil {
		return nil, fmt.Errorf("convert TrafficSplit CRD: %w", err)
	}
	crd.APIVersion, crd.Kind = "apiextensions.k8s.io/v1", "CustomResourceDefinition"
	crd.Spec.PreserveUnknownFields = false
	for i := range crd.Spec.Versions {
		v := &crd.Spec.Versions[i]
		if v.Schema == nil || v.Schema.OpenAPIV3Schema == nil {
			return nil, fmt.Errorf("TrafficSplit CRD %s: no schema after conversion", v.Name)
		}
		v.Schema.OpenAPIV3Schema.Type = "object"
		if v.Name == "v1alpha2" {
			v.Served = true
		}
	}
	return json.Marshal(&crd)
}

// installCRDs creates the three CRDs and waits until each is established
// and its versions are served.
func (c *cluster) installCRDs() error {
	hr, err := crdFile(gatewayModule, httpRouteCRD, "httproutes.gateway.networking.k8s.io")
	if err != nil {
		return err
	}
	if !bytes.Contains(hr, []byte(`"gateway.networking.k8s.io/bundle-version":"`+gatewayconsts.BundleVersion+`"`)) {
		return fmt.Errorf("HTTPRoute CRD is not of bundle %s", gatewayconsts.BundleVersion)
	}
	vs, err := crdFile(istioModule, istioCRDs, "virtualservices.networking.istio.io")
	if err != nil {
		return err
	}
	ts, err := trafficSplitCRD()
	if err != nil {
		return err
	}
	for _, crd := range []struct {
		name     string
		body     []byte
		versions []string
	}{
		{"httproutes.gateway.networking.k8s.io", hr, []string{"gateway.networking.k8s.io/v1"}},
		{"virtualservices.networking.istio.io", vs, []string{"networking.istio.io/v1"}},
		{"trafficsplits.split.smi-spec.io", ts, []string{"split.smi-spec.io/v1alpha4", "split.smi-spec.io/v1alpha2"}},
	} {
		code, out, err := c.raw(http.MethodPost, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", "application/json", crd.body)
		if err != nil {
			return err
		}
		if code != http.StatusCreated {
			return fmt.Errorf("create CRD %s: %d %s", crd.name, code, out)
		}
		if err := c.waitServed(crd.name, crd.versions); err != nil {
			return err
		}
	}
	return nil
}

func (c *cluster) waitServed(name string, versions []string) error {
	deadline := time.Now().Add(time.Minute)
	for {
		err := c.served(name, versions)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("CRD %s: %w after a minute", name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (c *cluster) served(name string, versions []string) error {
	code, out, err := c.raw(http.MethodGet, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"+name, "", nil)
	if err != nil {
		return err
	}
	if code != 200 {
		return fmt.Errorf("GET: %d", code)
	}
	var crd apiextv1.CustomResourceDefinition
	if err := json.Unmarshal(out, &crd); err != nil {
		return err
	}
	established := false
	for _, cond := range crd.Status.Conditions {
		if cond.Type == apiextv1.Established && cond.Status == apiextv1.ConditionTrue {
			established = true
		}
	}
	if !established {
		return errors.New("not established")
	}
	for _, v := range versions {
		if code, _, err := c.raw(http.MethodGet, "/apis/"+v, "", nil); err != nil || code != 200 {
			return fmt.Errorf("/apis/%s: %d %v", v, code, err)
		}
	}
	return nil
}
