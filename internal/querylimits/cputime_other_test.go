//go:build !linux

package querylimits

import "testing"

// cpuClock reports nothing where getrusage is not at hand: ns/op stays the measure.
type cpuClock struct{}

func startCPUClock(*testing.B) *cpuClock { return &cpuClock{} }
func (*cpuClock) stop()                  {}
func (*cpuClock) start()                 {}
func (*cpuClock) report()                {}
