package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// TestVMAlertRestoresAlertStateThroughGateway checks what docs/clients.md says of vmalert's alert-state restore
// through the gateway: vmalert 1.79.5 evaluates `sum(restore_input) > 0` (which aggregates the team label away) with
// a read token, writes ALERTS_FOR_STATE back with a write token that adds team=dev to every series, and on a restart
// reads it back through the gateway (-remoteRead.url, read token). With -external.label=team=dev the pending alert
// comes back with its activeAt; without it the stored state carries a team label the evaluated alert lacks, so the
// restarted vmalert holds the alert as a new one, its `for` started again.
func TestVMAlertRestoresAlertStateThroughGateway(t *testing.T) {
	vm := vmtest.Start(t)
	priv, pub := keyPair(t, "ec")
	g := startGateway(t, "-read.url="+vm.URL, "-write.url="+vm.URL, "-enable.auth", "-auth.publicKeyFiles="+pub)
	read := mint(t, priv, "-mode=read", "-extraLabels=team=dev")
	write := mint(t, priv, "-mode=write", "-extraLabels=team=dev")
	// One sample, a few seconds old, serves every evaluation of the test (VictoriaMetrics looks back 5m).
	if code, _, body := do(t, "POST", vm.URL+fmt.Sprintf("/api/v1/import/prometheus?timestamp=%d", time.Now().Add(-5*time.Second).UnixMilli()),
		strings.NewReader(`restore_input{team="dev"} 1`+"\n"), "Content-Type", "text/plain"); code/100 != 2 {
		t.Fatalf("import restore_input: %d %s", code, body)
	}
	vm.Flush(t)

	for _, c := range []struct {
		name     string
		external bool
	}{{"RestoreWithExternalLabel", true}, {"RestoreWithoutExternalLabel", false}} {
		rules := filepath.Join(t.TempDir(), "rules.yml")
		writeText(t, rules, fmt.Sprintf("groups:\n- name: %s\n  interval: 1s\n  rules:\n  - alert: %s\n    expr: sum(restore_input) > 0\n    for: 10m\n",
			strings.ToLower(c.name), c.name))
		flags := []string{"-notifier.url=http://127.0.0.1:1", "-rule=" + rules, "-evaluationInterval=1s", "-loggerLevel=INFO",
			"-datasource.url=" + g.URL, "-datasource.bearerToken=" + read,
			"-remoteWrite.url=" + g.URL, "-remoteWrite.bearerToken=" + write, "-remoteWrite.flushInterval=200ms",
			"-remoteRead.url=" + g.URL, "-remoteRead.bearerToken=" + read}
		if c.external {
			flags = append(flags, "-external.label=team=dev")
		}

		first := runClient(t, "/usr/bin/vmalert", flags...)
		t0 := first.waitEvaluated(t, c.name).ActiveAt
		// The state vmalert wrote is stored with the write token's team=dev, its value t0 in seconds.
		vmtest.Eventually(t, func() (bool, string) {
			vm.Flush(t)
			_, _, body := do(t, "GET", vm.URL+"/api/v1/export?match[]="+url.QueryEscape(`ALERTS_FOR_STATE{alertname="`+c.name+`"}`), nil)
			return strings.Contains(body, `"team":"dev"`) && strings.Contains(body, fmt.Sprintf(`"values":[%d`, t0.Unix())),
				fmt.Sprintf("ALERTS_FOR_STATE of %s (activeAt %s = %d) stored as %s", c.name, t0, t0.Unix(), body)
		})
		// The restore's query, as the gateway's access log shows vmalert sends it, answers the state before the restart:
		// the first vmalert asked it at its start, before there was any state, and VictoriaMetrics 1.79 answers a query
		// it answered empty so for up to a second after the series shows in /api/v1/export (a restart minutes later
		// would not see that).
		restoreQuery := fmt.Sprintf(`last_over_time(ALERTS_FOR_STATE{alertname=%q}[3600s])`, c.name)
		if c.external {
			restoreQuery = fmt.Sprintf(`last_over_time(ALERTS_FOR_STATE{alertname=%q,team="dev"}[3600s])`, c.name)
		}
		vmtest.Eventually(t, func() (bool, string) {
			code, _, body := do(t, "POST", g.URL+"/api/v1/query", strings.NewReader("query="+url.QueryEscape(restoreQuery)),
				append(bearer(read), "Content-Type", "application/x-www-form-urlencoded")...)
			return code == 200 && strings.Contains(body, fmt.Sprintf(`,"%d"]`, t0.Unix())), fmt.Sprintf("%s through the gateway: %d %s", restoreQuery, code, body)
		})
		first.stop()

		restartedAt := time.Now()
		second := runClient(t, "/usr/bin/vmalert", flags...)
		got := second.waitEvaluated(t, c.name)
		// Both restarted vmalerts read the stored state back through the gateway.
		if restored := fmt.Sprintf("alert %q (", c.name); !strings.Contains(second.logs.String(), restored) ||
			!strings.Contains(second.logs.String(), "restored to state at "+time.Unix(t0.Unix(), 0).String()) {
			t.Errorf("%s: the restarted vmalert did not restore the state of %s (t0 %s) through the gateway; its log:\n%s",
				c.name, c.name, t0, second.logs.String())
		}
		if c.external {
			// The evaluated alert carries team=dev like the stored state: it is the restored alert, its for kept.
			if !got.ActiveAt.Equal(t0.Truncate(time.Second)) || !got.Restored || got.Labels["team"] != "dev" {
				t.Errorf("%s: after the restart vmalert holds %+v; want the alert restored with team=dev and activeAt %s (t0 %s), not a fresh one",
					c.name, got, t0.Truncate(time.Second), t0)
			}
			continue
		}
		// The evaluated alert lacks the team=dev the stored state carries: another alert, pending since the restart.
		if !got.ActiveAt.After(restartedAt) || got.Restored || got.Labels["team"] != "" {
			t.Errorf("%s: after the restart (at %s) vmalert holds %+v; want a fresh alert without team, pending since the restart, "+
				"not the state of t0 %s", c.name, restartedAt, got, t0)
		}
	}
}

// apiAlert is an alert as vmalert's /api/v1/alerts shows it.
type apiAlert struct {
	Name     string            `json:"name"`
	State    string            `json:"state"`
	Value    string            `json:"value"`
	Labels   map[string]string `json:"labels"`
	ActiveAt time.Time         `json:"activeAt"`
	Restored bool              `json:"restored"`
}

// waitEvaluated waits until vmalert holds the alert name as evaluated by its rule (value 1, the sum of restore_input;
// a state restored but not yet evaluated holds its activeAt as value) and returns the alerts of that name.
func (v *clientProc) waitEvaluated(t *testing.T, name string) apiAlert {
	t.Helper()
	var found apiAlert
	vmtest.Eventually(t, func() (bool, string) {
		code, _, body := do(t, http.MethodGet, v.URL+"/api/v1/alerts", nil)
		var resp struct {
			Data struct{ Alerts []apiAlert }
		}
		if code != 200 || json.Unmarshal([]byte(body), &resp) != nil {
			return false, fmt.Sprintf("/api/v1/alerts: %d %s", code, body)
		}
		var mine []apiAlert
		for _, a := range resp.Data.Alerts {
			if a.Name == name {
				mine = append(mine, a)
			}
		}
		if len(mine) != 1 || mine[0].Value != "1" || mine[0].State != "pending" {
			return false, fmt.Sprintf("want one pending alert %s of value 1, vmalert holds %s", name, body)
		}
		found = mine[0]
		return true, ""
	})
	return found
}
