package main

// The sink backends as the sinks section sees them: what each is, how its
// CPU is read (from /proc, when it runs on this machine), and the few
// OpenSearch requests the harness makes itself.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"

	"github.com/productstream/productstream/config"
	"github.com/productstream/productstream/sink/opensearch"
)

// statFields returns the fields of /proc/<pid>/stat after the command
// name: index 0 is field 3 (state), 1 is field 4 (ppid), 11 and 12 are
// utime and stime, 13 and 14 cutime and cstime.
func statFields(pid int) ([]string, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil, errors.New("malformed /proc stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 15 {
		return nil, errors.New("short /proc stat")
	}
	return f, nil
}

// ticks sums fields of a stat line, in seconds.
func ticks(f []string, idx ...int) (float64, error) {
	var sum uint64
	for _, i := range idx {
		v, err := strconv.ParseUint(f[i], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse /proc stat: %w", err)
		}
		sum += v
	}
	return float64(sum) / clockTicks, nil
}

// localProcess checks that pid is a process of this machine named comm (a
// backend on another machine may report a pid that is some other process
// here).
func localProcess(pid int, comm string) error {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	if err != nil {
		return fmt.Errorf("pid %d is not a process of this machine", pid)
	}
	if got := strings.TrimSpace(string(b)); got != comm {
		return fmt.Errorf("pid %d here is %q, not %q: the backend runs elsewhere", pid, got, comm)
	}
	return nil
}

// postmasterCPU is the CPU of a PostgreSQL server: its postmaster's own
// and that of its children that have exited (cutime, cstime), plus that of
// its live children (one backend per connection, the checkpointer, the
// WAL writer, ...), which also serve other clients of the server.
func postmasterCPU(postmaster int) (float64, error) {
	f, err := statFields(postmaster)
	if err != nil {
		return 0, err
	}
	total, err := ticks(f, 11, 12, 13, 14)
	if err != nil {
		return 0, err
	}
	dir, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	parent := strconv.Itoa(postmaster)
	for _, d := range dir {
		pid, err := strconv.Atoi(d.Name())
		if err != nil || pid == postmaster {
			continue
		}
		cf, err := statFields(pid)
		if err != nil || cf[1] != parent {
			continue // gone meanwhile, or not a child
		}
		if v, err := ticks(cf, 11, 12); err == nil {
			total += v
		}
	}
	return total, nil
}

// openSearchDo sends one request to OpenSearch and decodes a 2xx answer
// into out (when not nil); any other status is an error quoting the body.
func (e *sinkEnv) openSearchDo(ctx context.Context, method, path string, body []byte, out any) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(e.h.o.opensearchURL, "/")+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := e.osHTTP.Do(req)
	if err != nil {
		return fmt.Errorf("opensearch %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("opensearch %s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("opensearch %s %s: %s: %s", method, path, resp.Status, truncate(string(b), 300))
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("opensearch %s %s: decode: %w", method, path, err)
		}
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// openSearchInfo asks OpenSearch for its version and the pid of the node
// answering.
func (e *sinkEnv) openSearchInfo(ctx context.Context) (backendInfo, error) {
	var root struct {
		Version struct {
			Number string `json:"number"`
		} `json:"version"`
	}
	if err := e.openSearchDo(ctx, http.MethodGet, "/", nil, &root); err != nil {
		return backendInfo{}, err
	}
	info := backendInfo{name: "OpenSearch " + root.Version.Number, where: e.h.o.opensearchURL}
	var nodes struct {
		Nodes map[string]struct {
			Process struct {
				ID int `json:"id"`
			} `json:"process"`
		} `json:"nodes"`
	}
	if err := e.openSearchDo(ctx, http.MethodGet, "/_nodes/_local/process?filter_path=nodes.*.process.id", nil, &nodes); err != nil {
		return backendInfo{}, err
	}
	for _, n := range nodes.Nodes {
		pid := n.Process.ID
		if err := localProcess(pid, "java"); err != nil {
			info.note = err.Error()
			return info, nil
		}
		info.cpu = func() (float64, error) { return procCPU(pid) }
		return info, nil
	}
	info.note = "OpenSearch did not say its pid"
	return info, nil
}

// openSearchIndexBody is the body that creates an index as the sink's
// index template creates its generations (settings and mappings): it
// creates a sink once to read its template back, then removes it.
func (e *sinkEnv) openSearchIndexBody(ctx context.Context) ([]byte, error) {
	alias := strings.ToLower(e.h.runID + "-ref")
	s, err := opensearch.New(ctx, config.SinkOpenSearch{URLs: []string{e.h.o.opensearchURL}, Index: alias}, e.log)
	if err != nil {
		return nil, fmt.Errorf("opensearch sink: %w", err)
	}
	_ = s.Close()
	defer e.drop("opensearch", true, alias)
	var got struct {
		IndexTemplates []struct {
			IndexTemplate struct {
				Template struct {
					Settings json.RawMessage `json:"settings"`
					Mappings json.RawMessage `json:"mappings"`
				} `json:"template"`
			} `json:"index_template"`
		} `json:"index_templates"`
	}
	if err := e.openSearchDo(ctx, http.MethodGet, "/_index_template/"+alias+"-template", nil, &got); err != nil {
		return nil, err
	}
	if len(got.IndexTemplates) != 1 {
		return nil, fmt.Errorf("opensearch: %d index templates named %s-template", len(got.IndexTemplates), alias)
	}
	t := got.IndexTemplates[0].IndexTemplate.Template
	return json.Marshal(map[string]json.RawMessage{"settings": t.Settings, "mappings": t.Mappings})
}

// openSearchCount refreshes index (or alias) and counts its documents.
func (e *sinkEnv) openSearchCount(ctx context.Context, index string) (int64, error) {
	if err := e.openSearchDo(ctx, http.MethodPost, "/"+index+"/_refresh", nil, nil); err != nil {
		return 0, err
	}
	var c struct {
		Count int64 `json:"count"`
	}
	err := e.openSearchDo(ctx, http.MethodGet, "/"+index+"/_count", nil, &c)
	return c.Count, err
}

// openSearchIndexing is the time OpenSearch spent indexing into index
// (its primaries' indexing.index_time_in_millis), in seconds.
func (e *sinkEnv) openSearchIndexing(ctx context.Context, index string) (float64, error) {
	var st struct {
		All struct {
			Primaries struct {
				Indexing struct {
					Millis int64 `json:"index_time_in_millis"`
				} `json:"indexing"`
			} `json:"primaries"`
		} `json:"_all"`
	}
	if err := e.openSearchDo(ctx, http.MethodGet, "/"+index+"/_stats/indexing", nil, &st); err != nil {
		return 0, err
	}
	return float64(st.All.Primaries.Indexing.Millis) / 1000, nil
}

// postgresInfo asks PostgreSQL for its version and, through the pid of
// the harness's connection, finds the postmaster.
func (e *sinkEnv) postgresInfo(ctx context.Context) (backendInfo, error) {
	var pid int
	var version string
	if err := e.pg.QueryRow(ctx, "SELECT pg_backend_pid(), current_setting('server_version')").Scan(&pid, &version); err != nil {
		return backendInfo{}, fmt.Errorf("postgres: %w", err)
	}
	cc := e.pg.Config().ConnConfig
	info := backendInfo{name: "PostgreSQL " + version, where: fmt.Sprintf("%s:%d", cc.Host, cc.Port)}
	if err := localProcess(pid, "postgres"); err != nil {
		info.note = err.Error()
		return info, nil
	}
	f, err := statFields(pid)
	if err != nil {
		info.note = err.Error()
		return info, nil
	}
	postmaster, err := strconv.Atoi(f[1])
	if err == nil {
		err = localProcess(postmaster, "postgres")
	}
	if err != nil {
		info.note = "no postmaster found: " + err.Error()
		return info, nil
	}
	info.cpu = func() (float64, error) { return postmasterCPU(postmaster) }
	return info, nil
}

// redisInfo asks Redis for its version and pid.
func (e *sinkEnv) redisInfo(ctx context.Context) (backendInfo, error) {
	text, err := e.rdb.Info(ctx, "server").Result()
	if err != nil {
		return backendInfo{}, fmt.Errorf("redis: %w", err)
	}
	fields := map[string]string{}
	for _, l := range strings.Split(text, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(l), ":"); ok {
			fields[k] = v
		}
	}
	info := backendInfo{name: "Redis " + fields["redis_version"], where: e.h.o.redisAddr}
	pid, err := strconv.Atoi(fields["process_id"])
	if err == nil {
		err = localProcess(pid, "redis-server")
	}
	if err != nil {
		info.note = err.Error()
		return info, nil
	}
	info.cpu = func() (float64, error) { return procCPU(pid) }
	return info, nil
}
