package router

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies holds the promise of the package doc: routers that link
// this package take on franz-go, canaryd's schemas package and the standard
// library, nothing else.
func TestDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, p := range strings.Fields(string(out)) {
		switch {
		case p == "github.com/inferensys/canaryd/router", p == "github.com/inferensys/canaryd/schemas",
			strings.HasPrefix(p, "github.com/twmb/franz-go/"),
			p == "github.com/klauspost/compress", strings.HasPrefix(p, "github.com/klauspost/compress/"),
			strings.HasPrefix(p, "github.com/pierrec/lz4/"):
			// franz-go's own compression dependencies
		default:
			t.Errorf("router depends on %s; want franz-go, schemas and the standard library only", p)
		}
	}
}
