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
// instead: every selector of a token whose labels or filters name a label with siblings also asks for the siblings to
// be absent, and the injected series always carries one. A series of the team's own with both spellings (rare) is
// hidden from it too.

// storageSiblings maps each name of commonTagKeys to the other names that share its sort key.
var storageSiblings = func() map[string][]string {
	groups := [][]string{{"sensor_type", "Sensor_type", "SensorType"}}
	for _, n := range []string{"namespace", "ns", "datacenter", "dc", "environment", "env", "cluster", "service", "job",
		"model", "type", "db", "instance", "host", "server", "pod", "node", "device", "tenant", "client", "name", "measurement"} {
		groups = append(groups, []string{n, strings.ToUpper(n[:1]) + n[1:]})
	}
	m := make(map[string][]string)
	for _, g := range groups {
		for _, n := range g {
			m[n] = slices.DeleteFunc(slices.Clone(g), func(s string) bool { return s == n })
		}
	}
	return m
}()

// siblingGuards returns the matchers `sibling=""` for the siblings of the label names in names that are not in
// have, and refuses names that hold two siblings: the restriction's own series could not be told from one injected so.
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
// the guards of its own names, so that a branch is narrowed only by the names it reads.
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
	e.selFilters = append(slices.Clip(e.labelFilters), guards...)
	// Not on writes: VictoriaMetrics drops a written label without a value before it sorts, and a guard that did get
	// there would only take the place of the sibling that tells the injected series apart.
	e.readLabelArgs = slices.Clip(e.extraLabelArgs)
	for _, g := range guards {
		e.readLabelArgs = append(e.readLabelArgs, g.Label+"=")
	}
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
		e.branches[i] = append(slices.Clip(b), bg...)
	}
	return nil
}

// siblingOf reports whether name shares VictoriaMetrics' sort key with a label the token sets.
func (e *Enforcer) siblingOf(name string) bool {
	for _, s := range storageSiblings[name] {
		if e.labelNamed(s) {
			return true
		}
	}
	return false
}
