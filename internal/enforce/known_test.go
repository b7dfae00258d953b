package enforce

import (
	"math/rand/v2"
	"strconv"
	"testing"
)

// wholeNumberWant is what WholeNumber must return: strconv's reading of at most 11 decimal digits, nothing else.
func wholeNumberWant(s string) (int64, bool) {
	if len(s) == 0 || len(s) > 11 {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}

func TestWholeNumber(t *testing.T) {
	cases := []string{"", "0", "9", "60", "060", "1781517600", "99999999999", "999999999999", "00000000000", "12345678",
		"1234567", "123456789", "1781517600.5", "1e9", "-60", "+60", " 60", "6 0", "1781517:00", "17815176/0", "178151760a",
		"\x2f", "\x3a", "12345678\xb0", "1234567\xb9", "0x10", "١٢"}
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 20000; i++ {
		b := make([]byte, 1+r.IntN(12))
		for j := range b {
			b[j] = byte('0' + r.IntN(10))
			if r.IntN(20) == 0 {
				b[j] = byte(r.IntN(256)) // a byte that is seldom a digit, anywhere
			}
		}
		cases = append(cases, string(b))
	}
	for _, s := range cases {
		n, ok := WholeNumber(s)
		wn, wok := wholeNumberWant(s)
		if n != wn || ok != wok {
			t.Fatalf("WholeNumber(%q) = %d, %v; want %d, %v", s, n, ok, wn, wok)
		}
	}
}

func FuzzWholeNumber(f *testing.F) {
	for _, s := range []string{"1781517600", "60", "12345678", "1234567:", "99999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, ok := WholeNumber(s)
		wn, wok := wholeNumberWant(s)
		if n != wn || ok != wok {
			t.Fatalf("WholeNumber(%q) = %d, %v; want %d, %v", s, n, ok, wn, wok)
		}
	})
}
