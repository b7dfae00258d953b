package querylimits

import (
	"encoding/json"
	"math"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/vmtest"
)

// timeArgCorpus is time args as clients and attackers write them: the forms each release reads its own way, the
// edges of each form, and what no release should read.
var timeArgCorpus = []string{
	"", "0", "-0", "00", "1700000000", "+1700000000", "01700000000", "1700000000.5", "1700000000.123456", ".5", "5.",
	"+.5", "-.5", "5e-1", "1.7e9", "1.7E9", "17e8", "1e10", "1e13", "1e16", "1e19", "1e300", "-1e300",
	"1700000000000", "1700000000000.0", "1.7e12", "1700000000000000", "1700000000000000000", "99999999999",
	"9223372036", "9223372036.854775807", "9223372037", "-9223372036", "-9223372037", "2026", "0001", "1677", "2262",
	"-5", "-100", "-1.5", "-0.001", "Inf", "-Inf", "NaN", "0x10", "1_000",
	"now", "now-1h", "now-1d", "now+1h", "1h", "-1h", "1h30m", "-1.5h", "1d", "1w", "1y", "-1y", "1ms", "100ms", "5i",
	"2026-06-15", "2026-06", "2026-06-15T11", "2026-06-15T11:00", "2026-06-15T11:00:00", "2026-06-15T11:00:00Z",
	"2026-06-15T11:00:00.123456789Z", "2026-06-15T11:00:00+02:00", "2026-06-15T11:00:00-02:00", "2026-06-15t11:00:00z",
	"2026-06-15 11:00:00", "1677-01-01T00:00:00Z", "1678-01-01T00:00:00Z", "2261-12-31T23:59:59Z", "2262-05-01T00:00:00Z",
	"9999-12-31T23:59:59Z", "0000-01-01T00:00:00Z", "1970-01-01T00:00:00Z", "1969-12-31T23:59:59Z",
	"-292277026596-12-04T15:30:07Z", "1700000000 ", " 1700000000",
}

// TestArgsAsVictoriaMetricsReadsThem asks both real releases what they read each time and step arg as, and checks
// the query limits' reading covers it. A release that changes how it reads an arg fails it. The current release reads
// a time without a zone (2026-06-15) in its own time zone, so it is asked again run in the zones farthest from UTC
// (an attacker's review put a range 7 hours past max_query_lookback through one in UTC+14).
func TestArgsAsVictoriaMetricsReadsThem(t *testing.T) {
	for _, rel := range []struct {
		name, zone string
		start      func(testing.TB, ...string) *vmtest.VM
	}{{"v1.79.5", "", vmtest.Start}, {vmtest.CurrentVersion, "", vmtest.StartCurrent},
		{vmtest.CurrentVersion + " in UTC+14", "Pacific/Kiritimati", vmtest.StartCurrent},
		{vmtest.CurrentVersion + " in UTC-12", "Etc/GMT+12", vmtest.StartCurrent}} {
		t.Run(rel.name, func(t *testing.T) {
			if rel.zone != "" {
				t.Setenv("TZ", rel.zone) // the release's own, as it inherits the environment
			}
			vm := rel.start(t)
			if rel.zone != "" {
				// The zone must act: a machine without its tzdata would run the release in UTC, and test nothing new.
				if ts, ok := vmReadsTime(t, vm.URL, "2026-06-15"); !ok || ts == time.Date(2026, 6, 15, 0, 0, 0, 0, time.UTC).UnixMilli() {
					t.Fatalf("TZ=%s: the release reads 2026-06-15 as %s (read: %v), as UTC: is the zone's tzdata installed?", rel.zone, fmtTime(ts), ok)
				}
			}
			t.Run("time", func(t *testing.T) { checkTimeArgs(t, vm.URL) })
			if rel.zone == "" {
				t.Run("step", func(t *testing.T) { checkStepArgs(t, vm.URL) })
			}
		})
	}
}

// checkTimeArgs reads each time arg as the release at base does (the timestamp of `time()` at it): the query
// limits' earliest reading must be no later and their latest no earlier, so that neither max_query_lookback nor
// max_total_query_length is judged on a later time than the backend reads. An arg the release refuses is read as
// nothing; the gateway may refuse it too.
func checkTimeArgs(t *testing.T, base string) {
	read := 0
	for _, arg := range timeArgCorpus {
		before := time.Now().UnixMilli()
		ts, ok := vmReadsTime(t, base, arg)
		after := time.Now().UnixMilli()
		if !ok {
			continue
		}
		read++
		lo, _, err := parseTimeRange(arg, before)
		_, hi, err2 := parseTimeRange(arg, after)
		if err != nil || err2 != nil {
			continue // refused before anything is forwarded
		}
		// 1.79.5 reads now to the second; the arg's own precision is the millisecond.
		if ts < lo-1000 || ts > hi+1000 {
			t.Errorf("time=%q: read as %s, the query limits %s..%s", arg, fmtTime(ts), fmtTime(lo), fmtTime(hi))
		}
	}
	if read < len(timeArgCorpus)/2 {
		t.Fatalf("read only %d of %d time args: is time() answering?", read, len(timeArgCorpus))
	}
}

// vmReadsTime is the time VictoriaMetrics reads arg as, in milliseconds, or false when it refuses it.
func vmReadsTime(t *testing.T, base, arg string) (int64, bool) {
	t.Helper()
	var ans instantAnswer
	if !vmAnswer(t, base, "/api/v1/query", url.Values{"query": {"time()"}, "time": {arg}}, &ans) {
		return 0, false
	}
	if len(ans.Data.Result) != 1 {
		t.Fatalf("time=%q: an answer of 200 without one sample", arg)
	}
	secs, ok := ans.Data.Result[0].Value[0].(float64)
	if !ok {
		t.Fatalf("time=%q: the sample's timestamp is %v", arg, ans.Data.Result[0].Value[0])
	}
	return int64(math.Round(secs * 1000)), true
}

// instantAnswer is the data of an instant query's answer.
type instantAnswer struct {
	Data struct {
		Result []struct {
			Value [2]any `json:"value"`
		} `json:"result"`
	} `json:"data"`
}

// vmAnswer sends args to the release at base+path and decodes its answer into ans; false when it refuses them.
func vmAnswer(t *testing.T, base, path string, args url.Values, ans any) bool {
	t.Helper()
	resp, err := http.PostForm(base+path, args)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false
	}
	if err := json.NewDecoder(resp.Body).Decode(ans); err != nil {
		t.Fatalf("%s?%s: %v", path, args.Encode(), err)
	}
	return true
}

// stepArgCorpus is step args in the forms VictoriaMetrics reads: seconds in any number form, durations, and what
// it refuses.
var stepArgCorpus = []string{
	"", "60", "060", "+60", "6_0", "1_0_0", "1.5", "1e1", "1E1", "0.5e2", ".5e2", "60.", "1m", "1m30s", "90s", "1.5m",
	"3600000ms", "1h", "1d", "1w", "1y", "1h30m", "-60", "-1m", "0", "1i", "Inf", "NaN", "1e-3", "0.001", "60ms",
	"60 ", "0x3c", "1e400", "9223372036854775807", "1_0m", "1m_0s", "1.5h", "2d12h",
}

// checkStepArgs reads each step arg as the release at base does (the spacing of `time()` over a range): min_step
// must never be judged on a coarser step than the backend runs.
func checkStepArgs(t *testing.T, base string) {
	read := 0
	for _, arg := range stepArgCorpus {
		step, ok := vmReadsStep(t, base, arg)
		if !ok {
			continue
		}
		read++
		if arg == "" {
			continue // no step arg: the gateway judges VictoriaMetrics' default, not an arg
		}
		if got, err := parseDurationArg(arg); err == nil && got > step {
			t.Errorf("step=%q: run at %s, the query limits read %s", arg, fmtDuration(step), fmtDuration(got))
		}
	}
	if read < len(stepArgCorpus)/2 {
		t.Fatalf("read only %d of %d step args: is time() answering?", read, len(stepArgCorpus))
	}
}

// vmReadsStep is the step VictoriaMetrics runs a range at for arg, in milliseconds, or false when it refuses arg.
// The range is 12 hours, or 3 years for a step too long to give two points in 12 hours.
func vmReadsStep(t *testing.T, base, arg string) (int64, bool) {
	t.Helper()
	for _, end := range []string{"1700043200", "1794608000"} {
		var ans struct {
			Data struct {
				Result []struct {
					Values [][2]any `json:"values"`
				} `json:"result"`
			} `json:"data"`
		}
		if !vmAnswer(t, base, "/api/v1/query_range", url.Values{"query": {"time()"}, "start": {"1700000000"}, "end": {end}, "step": {arg}}, &ans) {
			return 0, false
		}
		if len(ans.Data.Result) != 1 {
			t.Fatalf("step=%q: an answer of 200 without one series", arg)
		}
		vs := ans.Data.Result[0].Values
		if len(vs) < 2 {
			continue
		}
		t0, ok0 := vs[0][0].(float64)
		t1, ok1 := vs[1][0].(float64)
		if !ok0 || !ok1 {
			t.Fatalf("step=%q: timestamps %v %v", arg, vs[0][0], vs[1][0])
		}
		return int64(math.Round((t1 - t0) * 1000)), true
	}
	return 0, false
}
