package gateway

import (
	"net/url"
	"reflect"
	"strings"
	"testing"

	"github.com/vmgateway/vmgateway/internal/enforce"
)

var splitSeeds = []string{
	"", "&", "&&a=1&&", "query=up&start=1781517600&end=1781521200&step=60",
	"query=sum%28rate%28x%5B5m%5D%29%29&match%5B%5D=up&match[]=down&match=a&match=b",
	"a=1;b=2&start=1", "start=1&start=2&start=&end", "=1&=&x", "a=%zz&start=%41", "start=%&end=1", "%zz=1&end=2",
	"q=a+b&time=now-1h&timeout=30s&date=2026-06-15", "latency_offset=1s&max_lookback=5m&lookback_delta=1m&nocache=1",
	"trace=1&extra_label=team%3Ddev&extra_filters[]=%7Bx%3D%221%22%7D", "query=%E2%82%AC&start=%2B60", "a=1;&start=3",
	"start%3D1=2", "st%61rt=5",
}

// checkSplit checks that splitArgs returns what url.ParseQuery does, and records in Known exactly the values of
// the enforce.Args that the lookups by name find.
// splitArgs is splitRecording as the forward step calls it, the raw args recorded.
func splitArgs(raw string, known *enforce.Known, where int) (url.Values, error) {
	var rec []rawArg
	vs, err := splitRecording(raw, known, where, &rec)
	return vs, err
}

func checkSplit(t *testing.T, raw string) {
	want, wantErr := url.ParseQuery(raw)
	for _, where := range []int{enforce.FromURL, enforce.FromForm} {
		got, err := splitArgs(raw, nil, where)
		if !reflect.DeepEqual(got, want) || !sameError(err, wantErr) {
			t.Fatalf("splitArgs(%q) = %v, %v; url.ParseQuery: %v, %v", raw, got, err, want, wantErr)
		}
		var known enforce.Known
		got, err = splitArgs(raw, &known, where)
		if !reflect.DeepEqual(got, want) || !sameError(err, wantErr) {
			t.Fatalf("splitArgs(%q) recording = %v, %v; url.ParseQuery: %v, %v", raw, got, err, want, wantErr)
		}
		for a := enforce.Arg(0); a < enforce.NumArgs; a++ {
			vs := known.Values(a)
			w := want[a.String()]
			if !reflect.DeepEqual(vs[where], w) || len(vs[1-where]) != 0 || known.Has(a) != (w != nil) {
				t.Fatalf("splitArgs(%q) recorded %s = %q (Has %v); the values hold %q", raw, a, vs, known.Has(a), w)
			}
			var wantN int64
			wantOK := false
			if len(w) == 1 {
				wantN, wantOK = enforce.WholeNumber(w[0])
			}
			if n, ok := known.Whole(a); ok != wantOK || ok && n != wantN {
				t.Fatalf("splitArgs(%q) read %s as %d, %v; want %d, %v", raw, a, n, ok, wantN, wantOK)
			}
		}
		known.Reset()
		for a := enforce.Arg(0); a < enforce.NumArgs; a++ {
			if _, whole := known.Whole(a); whole {
				t.Fatalf("Reset kept %s's number", a)
			}
			if vs := known.Values(a); known.Has(a) || vs[0] != nil || vs[1] != nil {
				t.Fatalf("Reset kept %s = %q", a, vs)
			}
		}
	}
}

func sameError(a, b error) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Error() == b.Error()
}

func TestSplitArgs(t *testing.T) {
	for _, raw := range splitSeeds {
		checkSplit(t, raw)
	}
	// At url.ParseQuery's bound of args and past it.
	checkSplit(t, strings.Repeat("a=1&", maxArgs-1)+"start=1")
	_, err := splitArgs(strings.Repeat("a=1&", maxArgs)+"start=1", nil, enforce.FromURL)
	if _, want := url.ParseQuery(strings.Repeat("&", maxArgs)); err == nil || !sameError(err, want) {
		t.Errorf("past the bound: %v, want %v", err, want)
	}
}

// TestSplitArgsBothSources: the form's and the URL's values of an arg are recorded apart, each set into its own
// values, the URL's after the form's were split.
func TestSplitArgsBothSources(t *testing.T) {
	var known enforce.Known
	form, err := splitArgs("start=1&query=up&start=2", &known, enforce.FromForm)
	if err != nil {
		t.Fatal(err)
	}
	q, err := splitArgs("start=3&end=4", &known, enforce.FromURL)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(form, url.Values{"start": {"1", "2"}, "query": {"up"}}) || !reflect.DeepEqual(q, url.Values{"start": {"3"}, "end": {"4"}}) {
		t.Fatalf("form %v, URL %v", form, q)
	}
	if got := *known.Values(enforce.ArgStart); !reflect.DeepEqual(got, [2][]string{{"1", "2"}, {"3"}}) {
		t.Errorf("start recorded as %q", got)
	}
	if n, ok := known.Whole(enforce.ArgEnd); n != 4 || !ok {
		t.Errorf("Whole(end) = %d, %v", n, ok)
	}
	if _, ok := known.Whole(enforce.ArgStart); ok {
		t.Error("Whole(start) with three values")
	}
}

func FuzzSplitArgs(f *testing.F) {
	for _, s := range splitSeeds {
		f.Add(s)
	}
	f.Fuzz(checkSplit)
}

var unescapeSeeds = []string{
	"", "a", "+", "a+b", "%41", "%4", "%", "%%", "ab%%", "a%%", "%%41", "%zz", "a%4g", "%41%", "%41%4", "%41+%zz",
	"%e2%82%ac", "%E2%82%AC+x", "x%2", "%2B%2b", "sum%28rate%28x%5B5m%5D%29%29", "%%%%%%%41", "++%41++",
}

// checkUnescape checks that queryUnescape returns what url.QueryUnescape does: the same string or the same error.
func checkUnescape(t *testing.T, s string) {
	want, wantErr := url.QueryUnescape(s)
	got, err := queryUnescape(s)
	if got != want || !sameError(err, wantErr) {
		t.Fatalf("queryUnescape(%q) = %q, %v; url.QueryUnescape: %q, %v", s, got, err, want, wantErr)
	}
}

func TestQueryUnescape(t *testing.T) {
	for _, s := range unescapeSeeds {
		checkUnescape(t, s)
	}
}

func FuzzQueryUnescape(f *testing.F) {
	for _, s := range unescapeSeeds {
		f.Add(s)
	}
	f.Fuzz(checkUnescape)
}
