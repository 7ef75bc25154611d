package console

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/productstream/productstream/config"
	"github.com/productstream/productstream/deliveries"
)

// pages are the parsed templates: one set per view, each the layout and
// the view's own file.
type pages struct {
	byView map[string]*template.Template
	log    *slog.Logger
}

// page is what every template is given.
type page struct {
	Title   string
	Path    string
	Nav     []navItem
	User    principal
	Actions bool // the act scope may use the actions here
	Data    any
	Status  int
	Message string
}

type navItem struct {
	Path, Title string
	Current     bool
}

// navigation lists the views, in the order of the navigation bar.
func navigation() []navItem {
	return []navItem{
		{Path: "/", Title: "Overview"},
		{Path: "/sources", Title: "Sources"},
		{Path: "/deliveries", Title: "Deliveries"},
		{Path: "/products", Title: "Product timeline"},
		{Path: "/processor", Title: "Processor"},
		{Path: "/dead-letters", Title: "Dead letters"},
		{Path: "/sinks", Title: "Sinks"},
	}
}

// templateOf names each view's template file.
func templateOf(path string) string {
	if path == "/" {
		return "overview"
	}
	return strings.TrimPrefix(path, "/")
}

func newPages(log *slog.Logger) (*pages, error) {
	base, err := template.New("").Funcs(funcs()).ParseFS(files, "templates/layout.html")
	if err != nil {
		return nil, fmt.Errorf("console templates: %w", err)
	}
	p := &pages{byView: map[string]*template.Template{}, log: log}
	names, err := fs.Glob(files, "templates/*.html")
	if err != nil {
		return nil, err
	}
	for _, f := range names {
		name := strings.TrimSuffix(strings.TrimPrefix(f, "templates/"), ".html")
		if name == "layout" {
			continue
		}
		t, err := base.Clone()
		if err == nil {
			_, err = t.ParseFS(files, f)
		}
		if err != nil {
			return nil, fmt.Errorf("console template %s: %w", name, err)
		}
		p.byView[name] = t
	}
	return p, nil
}

// render writes a view's page; an htmx request for a refresh gets only the
// content.
func (p *pages) render(w http.ResponseWriter, r *http.Request, v view, who principal, data any, actions bool) {
	p.write(w, r, templateOf(v.path), page{Title: v.title, Path: v.path, User: who,
		Actions: actions && who.can(config.ScopeAct), Data: data, Status: http.StatusOK})
}

func (p *pages) renderError(w http.ResponseWriter, r *http.Request, who principal, status int, msg string) {
	p.write(w, r, "error", page{Title: http.StatusText(status), User: who, Status: status, Message: msg})
}

func (p *pages) renderResult(w http.ResponseWriter, r *http.Request, who principal, res ActionResult) {
	p.write(w, r, "result", page{Title: "Done", User: who, Data: res, Status: http.StatusOK})
}

func (p *pages) write(w http.ResponseWriter, r *http.Request, name string, pg page) {
	for _, n := range navigation() {
		n.Current = n.Path == pg.Path
		pg.Nav = append(pg.Nav, n)
	}
	t := p.byView[name]
	which := "layout"
	if r.Header.Get("HX-Request") == "true" && r.Header.Get("HX-Boosted") != "true" {
		which = "content"
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, which, pg); err != nil {
		p.log.Error("console: a page could not be rendered", "page", name, "err", err)
		http.Error(w, "the page could not be rendered", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(pg.Status)
	_, _ = buf.WriteTo(w)
}

// funcs are the templates' helpers.
func funcs() template.FuncMap {
	return template.FuncMap{
		"ago":        ago,
		"abs":        func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05.000Z") },
		"iso":        func(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) },
		"secs":       secs,
		"rate":       func(f float64) string { return strconv.FormatFloat(f, 'f', 1, 64) },
		"bytes":      byteSize,
		"query":      query,
		"spark":      sparkline,
		"deref":      func(f *float64) float64 { return *f },
		"deref_bool": func(b *bool) bool { return *b },
		"sub":        func(a, b int64) int64 { return a - b },
		"percent":    percent,
		"isZero":     func(t time.Time) bool { return t.IsZero() },
		"jsonText":   jsonText,
		"perMinute":  perMinute,
	}
}

// ago is t relative to now, in words: "3 s ago".
func ago(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := time.Since(t)
	switch {
	case d < 0:
		return "in " + round(-d)
	case d < time.Second:
		return "just now"
	}
	return round(d) + " ago"
}

func round(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%d s", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%d min", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%.1f h", d.Hours())
	}
	return fmt.Sprintf("%d d", int(d.Hours()/24))
}

// secs shows seconds: "0 s", "1.2 s", "3 min".
func secs(f float64) string {
	switch {
	case f < 0.05:
		return "0 s"
	case f < 60:
		return strconv.FormatFloat(f, 'f', 1, 64) + " s"
	}
	return round(time.Duration(f * float64(time.Second)))
}

func byteSize(n int64) string {
	switch {
	case n < 1<<10:
		return fmt.Sprintf("%d B", n)
	case n < 1<<20:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}

func percent(a, b int64) string {
	if b <= 0 {
		return "–"
	}
	return strconv.FormatFloat(100*float64(a)/float64(b), 'f', 0, 64) + " %"
}

// query builds a URL query from key, value pairs (values of any string
// type), leaving out empty values. It is a template.URL, so that a
// template puts it after a "?" as it is: url.Values has escaped every
// key and value.
func query(kv ...any) template.URL {
	q := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		if v := fmt.Sprint(kv[i+1]); v != "" {
			q.Set(fmt.Sprint(kv[i]), v)
		}
	}
	return template.URL(q.Encode())
}

// jsonText is JSON indented for reading, "\/" in its strings shown as
// "/" (Avro's JSON escapes every slash), or the bytes as they are when
// they are not JSON.
func jsonText(b json.RawMessage) string {
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		return string(b)
	}
	return unescapeSlashes(out.Bytes())
}

// unescapeSlashes turns every "\/" escape in b's strings into "/",
// leaving every other escape as it is.
func unescapeSlashes(b []byte) string {
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); i++ {
		if b[i] == '\\' && i+1 < len(b) {
			if b[i+1] != '/' {
				out = append(out, b[i])
			}
			out = append(out, b[i+1])
			i++
			continue
		}
		out = append(out, b[i])
	}
	return string(out)
}

// perMinute picks one count of each minute: "accepted" or "refused".
func perMinute(ms []deliveries.Minute, which string) []int {
	out := make([]int, len(ms))
	for i, m := range ms {
		if which == "refused" {
			out[i] = m.Refused
		} else {
			out[i] = m.Accepted
		}
	}
	return out
}

// Spark is a sparkline's SVG polyline.
type Spark struct {
	Points string
	Max    int
}

// sparkline draws counts as a polyline 120 by 24, oldest first.
func sparkline(counts []int) Spark {
	top := 1
	for _, c := range counts {
		top = max(top, c)
	}
	var b strings.Builder
	n := max(1, len(counts)-1)
	for i, c := range counts {
		x := 120 * float64(i) / float64(n)
		y := 23 - 22*float64(c)/float64(top)
		fmt.Fprintf(&b, "%.1f,%.1f ", x, math.Round(y*10)/10)
	}
	return Spark{Points: strings.TrimSpace(b.String()), Max: top}
}
