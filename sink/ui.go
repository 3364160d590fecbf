package sink

import (
	"bytes"
	"embed"
	"html/template"
	"net/http"
	"path"
	"strconv"
	"time"

	"github.com/inferensys/canaryd/detector"
)

// The status page (GET /): index.html is a template the server fills with
// the rollouts' list, so the page says where each rollout is even without
// JavaScript; app.js then polls the JSON API every 2 s and draws each
// rollout's evidence as SVG. Everything is embedded: no CDN, no build step.
//
//go:embed ui/index.html ui/app.js ui/style.css
var uiFiles embed.FS

var pageTemplate = template.Must(template.New("index.html").Funcs(template.FuncMap{
	"stepOf": func(st detector.Status) string {
		if st.Step < 0 {
			return "–"
		}
		return strconv.Itoa(st.Step+1) + " of " + strconv.Itoa(st.Steps)
	},
}).ParseFS(uiFiles, "ui/index.html"))

// uiTypes are the assets' media types by extension.
var uiTypes = map[string]string{
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".html": "text/html; charset=utf-8",
}

// pageHandler renders the status page with the rollouts as they are now.
func pageHandler(src StatusSource) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		var buf bytes.Buffer
		data := struct {
			Rollouts []detector.Status
			Now      time.Time
		}{src.Statuses(), time.Now().UTC()}
		if err := pageTemplate.Execute(&buf, data); err != nil {
			writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "status page: " + err.Error()})
			return
		}
		w.Header().Set("Content-Type", uiTypes[".html"])
		w.Header().Set("Cache-Control", "no-store")
		_, _ = buf.WriteTo(w)
	}
}

// assetHandler serves the page's script and style sheet.
func assetHandler(ref refuser) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("file")
		typ, ok := uiTypes[path.Ext(name)]
		if !ok || name == "index.html" {
			ref.refuse(w, http.StatusNotFound, "unknown_file", "no file "+quoteID(name)+": the status page is at /")
			return
		}
		b, err := uiFiles.ReadFile("ui/" + name)
		if err != nil {
			ref.refuse(w, http.StatusNotFound, "unknown_file", "no file "+quoteID(name)+": the status page is at /")
			return
		}
		w.Header().Set("Content-Type", typ)
		// Served from the binary: a new binary may bring new files under
		// the same names, so the browser checks each time.
		w.Header().Set("Cache-Control", "no-cache")
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		_, _ = w.Write(b)
	}
}
