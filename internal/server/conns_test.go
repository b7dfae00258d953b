package server

import "testing"

func TestConnBound(t *testing.T) {
	limit := openFilesLimit()
	if limit <= 0 {
		t.Fatalf("the open-files limit reads as %d", limit)
	}
	auto := min(limit*3/4, maxConnsCeiling)
	for _, tc := range []struct{ max, listeners, want int }{
		{100, 1, 100},
		{100, 3, 34},
		{-1, 1, 0},
		{0, 1, auto},
		{0, 2, (auto + 1) / 2},
		{5, 0, 0},
	} {
		if got := connBound(tc.max, tc.listeners); got != tc.want {
			t.Errorf("connBound(%d, %d) = %d; want %d", tc.max, tc.listeners, got, tc.want)
		}
	}
}
