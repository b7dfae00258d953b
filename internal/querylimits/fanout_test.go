package querylimits

import (
	"fmt"
	"strings"
	"testing"

	"github.com/VictoriaMetrics/metricsql"
)

// TestFanOuts: the functions that make several series of each series they read are listed with what they read, the
// points they are evaluated at, and the aggregation VictoriaMetrics does as it goes over them, where it does one.
func TestFanOuts(t *testing.T) {
	const now, end, start = int64(1_700_000_000_000), int64(1_700_000_000_000), int64(1_699_996_400_000) // an hour
	const step, points = int64(8_000), int64(451)
	h := func(src string, win int64, g *Grouping) FanOut {
		return FanOut{Func: "histogram_over_time", Label: "vmrange", Source: src, Most: 488, ByData: true, From: start, To: end,
			Step: step, Window: win, Points: points, Group: g}
	}
	by := func(labels ...string) *Grouping { return &Grouping{Op: "by", Labels: labels} }
	sub := start - 3_600_000 - staleness - 60_000
	cv := func(args, label, src string, from, to, step int64, aligned bool, points, outer int64) FanOut {
		f := FanOut{Func: "count_values", Args: args, Label: label, Source: src, Most: maxValuesCounted, ByData: true,
			Subquery: aligned, From: from, To: to, Step: step, Points: points, Outer: outer, ValuesBy: &Grouping{}}
		if aligned {
			f.Inner = step
		}
		return f
	}
	for _, tc := range []struct {
		q    string
		want []FanOut
	}{
		{`histogram_over_time(x{a="b"}[5m])`, []FanOut{h(`x{a="b"}`, 300_000, nil)}},
		{`HISTOGRAM_OVER_TIME(x)`, []FanOut{h(`x`, step, nil)}},
		{`histogram_quantile(0.9, histogram_over_time(x[5m]))`, []FanOut{h(`x`, 300_000, nil)}},
		// Under an aggregation VictoriaMetrics does as it goes: by its modifier.
		{`sum(histogram_over_time(x[5m])) by (vmrange)`, []FanOut{h(`x`, 300_000, by("vmrange"))}},
		{`Count(histogram_over_time(x[5m]))`, []FanOut{h(`x`, 300_000, &Grouping{})}},
		// A limit is not kept: VictoriaMetrics applies it in each of its workers.
		{`max(histogram_over_time(x[5m])) without (job) limit 5`, []FanOut{h(`x`, 300_000, &Grouping{Op: "without", Labels: []string{"job"}})}},
		{`histogram_quantile(0.9, sum(histogram_over_time(x[5m])) by (vmrange, le))`, []FanOut{h(`x`, 300_000, by("vmrange", "le"))}},
		// Not as it goes: other aggregations, two args, anything between, a subquery, a union.
		{`topk(3, histogram_over_time(x[5m]))`, []FanOut{h(`x`, 300_000, nil)}},
		{`quantile(0.5, histogram_over_time(x[5m])) by (vmrange)`, []FanOut{h(`x`, 300_000, nil)}},
		{`sum(abs(histogram_over_time(x[5m]))) by (vmrange)`, []FanOut{h(`x`, 300_000, nil)}},
		{`sum(histogram_over_time(x[5m]) or histogram_over_time(y[5m])) by (vmrange)`, []FanOut{h(`x`, 300_000, nil), h(`y`, 300_000, nil)}},
		{`sum(histogram_over_time(rate(x[1m])[1h:1m])) by (vmrange)`, []FanOut{{Func: "histogram_over_time", Label: "vmrange",
			Source: `rate(x[1m])`, Most: 488, ByData: true, Subquery: true, From: start, To: end, Step: step, Window: 3_600_000,
			Inner: 60_000, Points: points}}},
		// An argument that is neither a window nor a selector is a subquery at the step.
		{`histogram_over_time(sum(x))`, []FanOut{{Func: "histogram_over_time", Label: "vmrange", Source: `sum(x)`, Most: 488,
			ByData: true, Subquery: true, From: start, To: end, Step: step, Window: step, Inner: step, Points: points}}},
		// Shifted, the series as long as the range's points.
		{`histogram_over_time(x[5m] offset 1h)`, []FanOut{{Func: "histogram_over_time", Label: "vmrange", Source: `x`, Most: 488,
			ByData: true, From: start - 3_600_000, To: end - 3_600_000, Step: step, Window: 300_000, Points: points}}},
		{`histogram_over_time(x[5m] @ 1699999000)`, []FanOut{{Func: "histogram_over_time", Label: "vmrange", Source: `x`, Most: 488,
			ByData: true, From: 1_699_999_000_000, To: 1_699_999_000_000, Step: step, Window: 300_000, Points: points}}},
		// Nested: the inner one first, its series of its own points, and the rollup over its subquery's of each.
		{`histogram_over_time(histogram_over_time(x[5m])[1h:1m])`, []FanOut{
			{Func: "histogram_over_time", Label: "vmrange", Source: `x`, Most: 488, ByData: true, From: sub,
				To: end + 60_000, Step: 60_000, Window: 300_000, Points: 128, Outer: points},
			{Func: "histogram_over_time", Label: "vmrange", Source: `histogram_over_time(x[5m])`, Most: 488, ByData: true,
				Subquery: true, From: start, To: end, Step: step, Window: 3_600_000, Inner: 60_000, Points: points}}},
		{`quantiles_over_time("phi", 0.5, 0.9, 0.99, x[5m])`, []FanOut{{Func: "quantiles_over_time", Label: "phi", Source: `x`,
			Most: 3, From: start, To: end, Step: step, Window: 300_000, Points: points}}},
		{`quantiles_over_time("phi", scalar(y), 0.9, x[5m])`, []FanOut{{Func: "quantiles_over_time", Label: "phi", Source: `x`,
			Most: 2, From: start, To: end, Step: step, Window: 300_000, Points: points}}},
		{`sum(quantiles_over_time("q", 0.5, 0.9, x[5m])) by (q)`, []FanOut{{Func: "quantiles_over_time", Label: "q", Source: `x`,
			Most: 2, From: start, To: end, Step: step, Window: 300_000, Points: points, Group: by("q")}}},
		// A phi label given by an expression is not known.
		{`quantiles_over_time(label_set(vector(NaN), "__name__", "phi"), 0.5, 0.9, x[5m])`, []FanOut{{Func: "quantiles_over_time",
			Source: `x`, Most: 2, From: start, To: end, Step: step, Window: 300_000, Points: points}}},
		// Under an @ of a time that is not known (the gate lets none through): marked, inside a subquery too.
		{`histogram_over_time(x[5m] @ timestamp(y))`, []FanOut{{Func: "histogram_over_time", Label: "vmrange", Source: `x`,
			Most: 488, ByData: true, From: start, To: end, Step: step, Window: 300_000, Points: points, AtUnknown: true}}},
		{`max_over_time(histogram_over_time(x[5m])[10m:1m] @ timestamp(y))`, []FanOut{{Func: "histogram_over_time", Label: "vmrange",
			Source: `x`, Most: 488, ByData: true, From: start - 600_000 - staleness - 60_000, To: end + 60_000, Step: 60_000,
			Window: 300_000, Points: 78, Outer: points, AtUnknown: true}}},
		// The rollup over the subquery makes a series of its 451 points of each the function makes at the subquery's 7.
		{`max_over_time(count_values_over_time("v", x[20m])[20m:20m])`, []FanOut{{Func: "count_values_over_time", Args: `"v", `,
			Label: "v", Source: `x`, Most: maxValuesCounted, ByData: true, From: start - 1_200_000 - staleness - 1_200_000,
			To: end + 1_200_000, Step: 1_200_000, Window: 1_200_000, Points: 7, Outer: points}}},
		// A subquery's own points where they are more than the rollup's over it: both held.
		{`max_over_time(count_values_over_time("v", x[5m])[1h:1s])`, []FanOut{{Func: "count_values_over_time", Args: `"v", `, Label: "v",
			Source: `x`, Most: maxValuesCounted, ByData: true, From: start - 3_600_000 - staleness - 1_000, To: end + 1_000, Step: 1_000,
			Window: 300_000, Points: (2*3_600_000+staleness+2_000)/1_000 + 1, Outer: points}}},
		// An aggregation inside the subquery, as it goes: its groups at the subquery's points; the levels' points add up.
		{`max_over_time(sum(histogram_over_time(x[5m])) by (vmrange)[1h:1h])`, []FanOut{{Func: "histogram_over_time",
			Label: "vmrange", Source: `x`, Most: 488, ByData: true, From: start - 3_600_000 - staleness - 3_600_000,
			To: end + 3_600_000, Step: 3_600_000, Window: 300_000, Points: 5, Outer: points, Group: by("vmrange")}}},
		{`max_over_time(max_over_time(histogram_over_time(x[5m])[10m:1m])[1h:10m])`, []FanOut{{Func: "histogram_over_time",
			Label: "vmrange", Source: `x`, Most: 488, ByData: true, From: start - 3_600_000 - staleness - 600_000 - 600_000 - staleness - 60_000,
			To: end + 600_000 + 60_000, Step: 60_000, Window: 300_000, Points: 163, Outer: points + 15}}},
		// A rollup that makes several series of each: as many times the points (an attacker's review: 200 names in
		// aggr_over_time over 10 series' buckets took v1.151 to 2.5 GB).
		{`aggr_over_time(("min_over_time", "max_over_time"), histogram_over_time(x[5m])[1h:1m])`, []FanOut{{Func: "histogram_over_time",
			Label: "vmrange", Source: `x`, Most: 488, ByData: true, From: sub, To: end + 60_000, Step: 60_000, Window: 300_000,
			Points: 128, Outer: 2 * points}}},
		{`rollup(max_over_time(histogram_over_time(x[5m])[10m:1m])[1h:10m])`, []FanOut{{Func: "histogram_over_time",
			Label: "vmrange", Source: `x`, Most: 488, ByData: true, From: start - 3_600_000 - staleness - 600_000 - 600_000 - staleness - 60_000,
			To: end + 600_000 + 60_000, Step: 60_000, Window: 300_000, Points: 163, Outer: 3*points + 15}}},
		{`rollup_candlestick(histogram_over_time(x[5m])[1h:1m], "open")`, []FanOut{{Func: "histogram_over_time",
			Label: "vmrange", Source: `x`, Most: 488, ByData: true, From: sub, To: end + 60_000, Step: 60_000, Window: 300_000,
			Points: 128, Outer: points}}},
		{`histogram_over_time(x[5m] @ (end() - end() % 3600))`, []FanOut{{Func: "histogram_over_time", Label: "vmrange", Source: `x`,
			Most: 488, ByData: true, From: end - end%3_600_000, To: end - end%3_600_000, Step: step, Window: 300_000, Points: points}}},
		{`WITH (h(s) = histogram_over_time(s[5m])) h(x)`, []FanOut{h(`x`, 300_000, nil)}},
		// count_values_over_time: a series of each value met, at most one a sample, under its label.
		{`count_values_over_time("v", x[5m])`, []FanOut{{Func: "count_values_over_time", Args: `"v", `, Label: "v", Source: `x`,
			Most: maxValuesCounted, ByData: true, From: start, To: end, Step: step, Window: 300_000, Points: points}}},
		{`sum(count_values_over_time("code", x[5m])) by (code)`, []FanOut{{Func: "count_values_over_time", Args: `"code", `, Label: "code",
			Source: `x`, Most: maxValuesCounted, ByData: true, From: start, To: end, Step: step, Window: 300_000, Points: points,
			Group: by("code")}}},
		// count_values: a series of each value its arg takes at its points, each as long as them; the range's own
		// points at the top, a subquery's (multiples of its step) inside one, and the inner one first.
		{`count(count_values("v", x))`, []FanOut{cv(`"v", `, "v", `x`, start, end, step, false, points, 0)}},
		{`count_values("v", rate(x[5m])) by (job)`, []FanOut{func() FanOut {
			f := cv(`"v", `, "v", `rate(x[5m])`, start, end, step, false, points, 0)
			f.ValuesBy = by("job")
			return f
		}()}},
		{`max_over_time(count_values("v", x)[10m:1s])`, []FanOut{cv(`"v", `, "v", `x`, start-600_000-staleness-1_000,
			end+1_000, 1_000, true, (2*600_000+staleness+2_000+3_000_000)/1_000+1, points)}},
		{`count_values("a", count_values("b", x))`, []FanOut{cv(`"b", `, "b", `x`, start, end, step, false, points, 0),
			cv(`"a", `, "a", `count_values("b", x)`, start, end, step, false, points, 0)}},
		{`count_values("v", x) offset 1h`, []FanOut{cv(`"v", `, "v", `x`, start-3_600_000-step-staleness-step, end-3_600_000+step,
			step, true, (3_600_000+3*step+staleness)/step+1, points)}},
		// A label given by an expression (VictoriaMetrics takes the name of the one series it returns) is not known.
		{`count_values(label_set(vector(NaN), "__name__", "v"), x)`, []FanOut{cv(`label_set(vector(NaN), "__name__", "v"), `, "",
			`x`, start, end, step, false, points, 0)}},
		{`quantile_over_time(0.9, x[5m]) + rate(histogram[5m])`, nil},
	} {
		rng := &Range{Read: func() (int64, int64, int64, error) { return start, end, step, nil }}
		got, err := FanOuts(tc.q, nil, false, rng, now)
		if err != nil {
			t.Fatalf("%s: %s", tc.q, err)
		}
		if fmt.Sprintf("%+v", deref(got)) != fmt.Sprintf("%+v", deref(tc.want)) {
			t.Errorf("%s:\n got %+v\nwant %+v", tc.q, deref(got), deref(tc.want))
		}
	}
}

// deref prints a list of FanOut with their groups.
func deref(fs []FanOut) string {
	var b strings.Builder
	for _, f := range fs {
		g, v := f.Group, f.ValuesBy
		f.Group, f.ValuesBy = nil, nil
		fmt.Fprintf(&b, "%+v", f)
		if g != nil {
			fmt.Fprintf(&b, " group %+v", *g)
		}
		if v != nil {
			fmt.Fprintf(&b, " values by %+v", *v)
		}
		b.WriteString("; ")
	}
	return b.String()
}

func TestMentionsFanOut(t *testing.T) {
	for q, want := range map[string]bool{
		`histogram_over_time(x[5m])`:         true,
		`Quantiles_Over_Time("p", 1, x)`:     true,
		`histogram\_over_time(x[5m])`:        true,
		`x{a="é"}`:                           true,
		`rate(histogram[5m])`:                true, // a name of its own: the parse tells it is no call
		`HISTOGRAM by (a) (x)`:               true,
		`histogram(x)`:                       true,
		`rate(my_histogram[5m])`:             false,
		`quantile_over_time(0.5, x[5m])`:     false,
		`count_values("v", x)`:               true,
		`Count_Values_Over_Time("v", x[1m])`: true,
		`count(values)`:                      false,
		`histogram_over_tim`:                 false,
		`sum(rate(histogram_bucket[5m]))`:    false,
		`histogram_quantile(0.5, x) + hOT`:   false,
		// Where the scan looks: a name at either end, among other underscores, other bytes past the first eight.
		`x + HISTOGRAM_OVER_TIME`:         true,
		`__name__ + quantiles_over_time_`: true,
		`a_b_c_d_e_f_g_h_`:                false,
		`_`:                               false,
		`sum(rate(http_requests_total{a="abcdé"}))`:   true,
		"rate(x{a=\"abcdefgh\"}[5m]) + y{b=\"\x7f\"}": false,
	} {
		if got := MentionsFanOut(q); got != want {
			t.Errorf("MentionsFanOut(%q) = %v; want %v", q, got, want)
		}
	}
}

// TestMoving: what a count of a subquery or of count_values' arg cannot count with a query of its own.
func TestMoving(t *testing.T) {
	for q, want := range map[string]bool{
		`x and on() (end() == 1700000060)`:             true,
		`x and on() (range_last(vector(time())) == 5)`: true,
		`RUNNING_SUM(x)`:                               true,
		`x and on() (rand(1) > 0.5)`:                   true,
		`topk_max(1, x)`:                               true,
		`sum(x) by (a) limit 1`:                        true,
		`any(x) by (job)`:                              true,
		`rate(x[5m] @ time())`:                         true,
		`x @ end()`:                                    true,
		`interpolate(x)`:                               true,
		`max_over_time(now()[1h:1m])`:                  true,
		`rate(x[5m])`:                                  false,
		`x @ 1700000000`:                               false,
		`topk(1, x)`:                                   false,
		`time() - timestamp(x)`:                        false,
		`x * step()`:                                   false,
		`sort(x) offset 1h`:                            false,
		`max_over_time(x[1h:1m])`:                      false,
		`count_values("v", x)`:                         false,
		`label_replace(x, "a", "$1", "b", "(.*)") > bool 0`: false,
	} {
		e, err := metricsql.Parse(q)
		if err != nil {
			t.Fatalf("%s: %s", q, err)
		}
		if got := moving(e); got != want {
			t.Errorf("moving(%s) = %v; want %v", q, got, want)
		}
	}
}
