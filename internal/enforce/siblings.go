package enforce

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/VictoriaMetrics/metricsql"
)

// VictoriaMetrics' storage sorts a series' labels by a key that some names share (commonTagKeys in
// lib/storage/metric_name.go, the same list from 1.79.5 to v1.151 and in vmstorage: namespace and Namespace, job and
// Job, sensor_type, Sensor_type and SensorType, ...), keeping the order they came in among those of one key, and then
// drops a label only when the one before it has the same name: "the last one wins" holds for a name only while no
// sibling name comes between. A body with namespace="prod" then Namespace="x", written with the token's
// extra_label=namespace=dev, is stored with both namespace labels and indexed under namespace="prod": another team's
// series, written by a team that can only write its own (an attacker's review, on 1.79.5, v1.151 and the cluster).
// The gateway cannot order a body's labels without parsing every write format; it makes such a series unreadable
// instead: every read of a token whose labels or filters name a label with siblings also asks for the siblings to be
// absent (in its selectors, and as extra_label args), and the injected series always carries one, since
// VictoriaMetrics drops a label without a value before it sorts. A series of the team's own with two spellings (rare)
// is hidden from it too.

// storageSiblings maps each name that shares a sort key with others to those others. The key is VictoriaMetrics'
// commonTagKeys value, and a label whose name is those bytes themselves ("\x00\x00\x00" for namespace) sorts with
// them too: VictoriaMetrics takes NUL bytes in label names in every format, and a review of the first version of
// this guard injected a series with that name between the two namespace labels.
var storageSiblings = func() map[string][]string {
	keys := map[string]string{
		"namespace": "\x00\x00\x00", "ns": "\x00\x00\x01", "datacenter": "\x00\x00\x08", "dc": "\x00\x00\x09",
		"environment": "\x00\x00\x0c", "env": "\x00\x00\x0d", "cluster": "\x00\x00\x10", "service": "\x00\x00\x18",
		"job": "\x00\x00\x20", "model": "\x00\x00\x28", "type": "\x00\x00\x30", "sensor_type": "\x00\x00\x38",
		"SensorType": "\x00\x00\x38", "db": "\x00\x00\x40",
		"instance": "\x00\x01\x00", "host": "\x00\x01\x08", "server": "\x00\x01\x10", "pod": "\x00\x01\x18",
		"node": "\x00\x01\x20", "device": "\x00\x01\x28", "tenant": "\x00\x01\x30", "client": "\x00\x01\x38",
		"name": "\x00\x01\x40", "measurement": "\x00\x01\x48",
	}
	groups := make(map[string][]string)
	for n, k := range keys {
		// VictoriaMetrics adds each name's capitalised form under the same key.
		for _, v := range []string{n, strings.ToUpper(n[:1]) + n[1:]} {
			if !slices.Contains(groups[k], v) {
				groups[k] = append(groups[k], v)
			}
		}
	}
	m := make(map[string][]string)
	for k, g := range groups {
		slices.Sort(g)
		g = append(g, k)
		for _, n := range g {
			m[n] = slices.DeleteFunc(slices.Clone(g), func(s string) bool { return s == n })
		}
	}
	return m
}()

// siblingGuards returns the matchers `sibling=""` for the siblings of the label names in names that are not in
// have, adding them to have, and refuses names that hold two siblings: the restriction's own series could not be told
// from one injected so.
func siblingGuards(names []string, have map[string]bool) ([]metricsql.LabelFilter, error) {
	used := make(map[string]bool, len(names))
	for _, n := range names {
		used[n] = true
	}
	var guards []metricsql.LabelFilter
	for _, n := range slices.Sorted(maps.Keys(used)) {
		for _, s := range storageSiblings[n] {
			if used[s] {
				return nil, fmt.Errorf("the extra labels and filters name both %q and %q, which VictoriaMetrics' storage "+
					"orders as one label, so that a series written with both is stored with two values of one of them; "+
					"restrict by one of the two names", min(n, s), max(n, s))
			}
			if !have[s] {
				have[s] = true
				guards = append(guards, metricsql.LabelFilter{Label: s})
			}
		}
	}
	return guards, nil
}

// guardSiblings sets e.selFilters to the labels' matchers and their sibling guards, and adds to each filter branch
// the guards of its own names, so that a branch is narrowed only by the names it reads. The guards of the raw sort keys
// go to VictoriaMetrics alone, as extra_label args of every read (rawKey), a branch's too (no series of any branch
// should carry such a name): written into a query they would need escapes in every selector of every query the token
// sends, for a name with NUL bytes, which is never a team's own, so one layer is enough there.
func (e *Enforcer) guardSiblings() error {
	var names []string
	for _, l := range e.labels {
		names = append(names, l.Name)
	}
	have := map[string]bool{}
	guards, err := siblingGuards(names, have)
	if err != nil {
		return err
	}
	var raw []string
	split := func(g []metricsql.LabelFilter) []metricsql.LabelFilter {
		return slices.DeleteFunc(g, func(lf metricsql.LabelFilter) bool {
			if rawKey(lf.Label) {
				if !slices.Contains(raw, lf.Label) {
					raw = append(raw, lf.Label)
				}
				return true
			}
			return false
		})
	}
	guards = split(guards)
	e.selFilters = append(slices.Clip(e.labelFilters), guards...)
	for i, b := range e.branches {
		bn, bh := slices.Clone(names), maps.Clone(have)
		for _, lf := range b {
			if lf.Value == "" && !lf.IsNegative && !lf.IsRegexp {
				// The filter asks for the label's absence itself, as a guard does.
				bh[lf.Label] = true
				continue
			}
			bn = append(bn, lf.Label)
		}
		bg, err := siblingGuards(bn, bh)
		if err != nil {
			return err
		}
		e.branches[i] = append(slices.Clip(b), split(bg)...)
	}
	// Not on writes: VictoriaMetrics drops a written label without a value before it sorts, and a guard that did get
	// there would only take the place of the sibling that tells the injected series apart.
	e.readLabelArgs = slices.Clip(e.extraLabelArgs)
	for _, g := range guards {
		e.readLabelArgs = append(e.readLabelArgs, g.Label+"=")
	}
	for _, k := range raw {
		e.readLabelArgs = append(e.readLabelArgs, k+"=")
	}
	return nil
}

// rawKey says whether name is one of VictoriaMetrics' sort keys itself, which start with a NUL byte.
func rawKey(name string) bool { return strings.HasPrefix(name, "\x00") }

// siblingOf reports whether name shares VictoriaMetrics' sort key with a label the token sets.
func (e *Enforcer) siblingOf(name string) bool {
	for _, s := range storageSiblings[name] {
		if e.labelNamed(s) {
			return true
		}
	}
	return false
}
