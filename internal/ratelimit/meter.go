package ratelimit

import (
	"slices"
	"time"

	"github.com/vmgateway/vmgateway/internal/ratelimit/limitfile"
)

// meter is what one datasource query measures for every tenant: a type over a resolution.
type meter struct {
	typ limitfile.Type
	res limitfile.Resolution
}

func meterOf(l limitfile.Limit) meter { return meter{l.Type, l.Resolution} }

func (m meter) window() time.Duration {
	switch m.res {
	case limitfile.Minute:
		return time.Minute
	case limitfile.Hour:
		return time.Hour
	}
	return 0
}

// metersOf are the distinct meters of the limits without a key: one datasource query each. The datasource knows
// usage per tenant only: a limit with a key is counted by the gate alone, and so are the costs of queries, which
// the datasource has no figure for.
func metersOf(ls []limitfile.Limit) []meter {
	var out []meter
	for _, l := range ls {
		if m := meterOf(l); l.Key.IsZero() && !l.Type.Cost() && !slices.Contains(out, m) {
			out = append(out, m)
		}
	}
	return out
}
