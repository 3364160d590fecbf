package deploy

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestGrafanaDashboardShape checks what a Grafana render would show wrong
// and TestGrafanaDashboard (internal/daemon, which runs every query on a
// real Prometheus) does not: unique panel ids and refIds, panels inside the
// 24-column grid and not overlapping, every query on the dashboard's data
// source variable, the rollout variable used by the queries; and that the
// provisioning files parse and point where the README says.
func TestGrafanaDashboardShape(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("grafana", "canaryd.json"))
	if err != nil {
		t.Fatal(err)
	}
	type ds struct{ Type, UID string }
	var dash struct {
		UID    string
		Panels []struct {
			ID         int
			Title      string
			Type       string
			Datasource ds
			GridPos    struct{ X, Y, W, H int }
			Targets    []struct {
				RefID      string `json:"refId"`
				Expr       string
				Datasource ds
			}
		}
		Templating struct {
			List []struct{ Name, Type string }
		}
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("canaryd.json: %v", err)
	}
	if dash.UID == "" || len(dash.Panels) == 0 {
		t.Fatalf("canaryd.json: uid %q, %d panels", dash.UID, len(dash.Panels))
	}
	vars := map[string]string{}
	for _, v := range dash.Templating.List {
		vars[v.Name] = v.Type
	}
	if vars["datasource"] != "datasource" || vars["rollout"] != "query" {
		t.Errorf("variables %v; want datasource (datasource) and rollout (query)", vars)
	}
	ids := map[int]bool{}
	cells := map[[2]int]string{}
	for _, p := range dash.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		g := p.GridPos
		if g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
			t.Errorf("panel %q: gridPos %+v outside the 24-column grid", p.Title, g)
		}
		for x := g.X; x < g.X+g.W; x++ {
			for y := g.Y; y < g.Y+g.H; y++ {
				if other, ok := cells[[2]int{x, y}]; ok {
					t.Errorf("panels %q and %q overlap at (%d, %d)", other, p.Title, x, y)
				}
				cells[[2]int{x, y}] = p.Title
			}
		}
		if p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q: data source %q; want the ${datasource} variable", p.Title, p.Datasource.UID)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if refs[tg.RefID] || tg.RefID == "" {
				t.Errorf("panel %q: refId %q empty or twice", p.Title, tg.RefID)
			}
			refs[tg.RefID] = true
			if tg.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q/%s: data source %q", p.Title, tg.RefID, tg.Datasource.UID)
			}
			if !strings.Contains(tg.Expr, "$rollout") && !strings.Contains(tg.Expr, "canaryd_consumer_lag") && !strings.Contains(tg.Expr, "canaryd_dlq_records_total") && !strings.Contains(tg.Expr, "canaryd_records_rejected_total") {
				t.Errorf("panel %q/%s ignores $rollout: %s", p.Title, tg.RefID, tg.Expr)
			}
		}
	}

	var dp struct {
		APIVersion int `yaml:"apiVersion"`
		Providers  []struct {
			Type    string
			Options struct{ Path string }
		}
	}
	readYAML(t, filepath.Join("grafana", "provisioning", "dashboards", "canaryd.yaml"), &dp)
	if dp.APIVersion != 1 || len(dp.Providers) != 1 || dp.Providers[0].Type != "file" || dp.Providers[0].Options.Path != "/var/lib/grafana/dashboards/canaryd" {
		t.Errorf("dashboard provider %+v; want one file provider at /var/lib/grafana/dashboards/canaryd", dp)
	}
	var dsp struct {
		APIVersion  int `yaml:"apiVersion"`
		Datasources []struct{ Name, Type, URL string }
	}
	readYAML(t, filepath.Join("grafana", "provisioning", "datasources", "prometheus.yaml"), &dsp)
	if dsp.APIVersion != 1 || len(dsp.Datasources) != 1 || dsp.Datasources[0].Type != "prometheus" || dsp.Datasources[0].URL == "" {
		t.Errorf("data sources %+v; want one Prometheus", dsp)
	}
}
