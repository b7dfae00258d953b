package gateway

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"

	"github.com/vmgateway/vmgateway/internal/membudget"
)

// TestReadWhole: a body comes back byte for byte whatever its size against readBodyStart and whatever length it
// declared (right, too large, too small, none), read in uneven pieces; a read that fails returns what came.
func TestReadWhole(t *testing.T) {
	for _, size := range []int{0, 1, readBodyStart - 1, readBodyStart, readBodyStart + 1, 3*readBodyStart + 7} {
		want := make([]byte, size)
		for i := range want {
			want[i] = byte(i*7 + i>>16)
		}
		for _, declared := range []int64{int64(size), int64(size) * 4, int64(size / 2), -1} {
			got, err := readWhole(iotest.HalfReader(bytes.NewReader(want)), declared, 0, &membudget.Hold{})
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("%d bytes declared as %d: %d bytes back (%v), equal: %v", size, declared, len(got), err, bytes.Equal(got, want))
			}
		}
	}
	// A body without a declared length reserves nothing past what it may give: the limit, and the byte that refuses it.
	const limit = 5*readBodyStart + 3
	got, err := readWhole(io.LimitReader(iotest.HalfReader(bytes.NewReader(make([]byte, 8*readBodyStart))), limit+1), -1, limit, &membudget.Hold{})
	// The allocator rounds a size up to its class (by less than an eighth); unbounded, the buffer would be 2 MiB.
	if err != nil || len(got) != limit+1 || cap(got) > limit+limit/8 {
		t.Fatalf("a body past the limit of %d: %d bytes in a buffer of %d (%v); want %d in about the limit", limit, len(got), cap(got), err, limit+1)
	}
	broken := errors.New("client gone")
	body := io.MultiReader(bytes.NewReader(make([]byte, 2*readBodyStart+5)), iotest.ErrReader(broken))
	got, err = readWhole(body, 4<<20, 0, &membudget.Hold{})
	if !errors.Is(err, broken) || len(got) != 2*readBodyStart+5 {
		t.Fatalf("a read failing after %d bytes: %d bytes and %v; want what came and the error", 2*readBodyStart+5, len(got), err)
	}
}
