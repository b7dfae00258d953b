package membudget

import (
	"errors"
	"testing"
)

var errFull = errors.New("full")

// TestBudget: holds grow within the budget and the unit's part, shrink and release back to it (twice is once), and
// the zero Hold bounds nothing.
func TestBudget(t *testing.T) {
	b := New(100, 40, func(int64) error { return errFull })
	a1, a2, c := b.Hold("a"), b.Hold("a"), b.Hold("c")
	for _, step := range []struct {
		h    *Hold
		n    int64
		fail bool
	}{
		{&a1, 30, false},
		{&a2, 10, false},
		{&a2, 1, true}, // a's part is 40
		{&c, 40, false},
		{&c, 1, true},
	} {
		if err := step.h.Grow(step.n); (err != nil) != step.fail || err != nil && err != errFull {
			t.Fatalf("grow %d: %v; want refused: %v", step.n, err, step.fail)
		}
	}
	if b.Free() != 20 {
		t.Errorf("%d free; want 20", b.Free())
	}
	a1.Shrink(10)
	if err := a2.Grow(10); err != nil {
		t.Errorf("a within its part again: %v", err)
	}
	a1.Release()
	a1.Release()
	a2.Release()
	c.Release()
	if b.Free() != 100 || len(b.units) != 0 {
		t.Errorf("after every release: %d free, units %v", b.Free(), b.units)
	}
	var none Hold
	if err := none.Grow(1 << 40); err != nil {
		t.Errorf("the zero Hold refused: %v", err)
	}
	none.Release()
	nilBudget := (*Budget)(nil).Hold("x")
	if err := nilBudget.Grow(1); err != nil {
		t.Errorf("a nil budget refused: %v", err)
	}
}
