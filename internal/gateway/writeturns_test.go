package gateway

import (
	"context"
	"errors"
	"io"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmgateway/vmgateway/internal/tenant"
)

// slotsOf is f's slots in use, and unit u's holds and paused writes.
func slotsOf(f *fairSlots, u unit) (used, running, paused int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	q := f.units[u]
	if q == nil {
		return f.used, 0, 0
	}
	return f.used, q.running(), q.paused
}

// resumeAsync resumes h in the background, and returns what resume returns.
func resumeAsync(f *fairSlots, h *hold) <-chan error {
	done := make(chan error, 1)
	go func() { done <- f.resume(h, h) }()
	return done
}

// TestPausedWriteGivesItsTurn: a write that pauses gives its slot to the unit whose turn it is; resuming, it waits
// for a turn, ahead of its unit's other writes, and a release while it pauses or waits gives back nothing twice.
func TestPausedWriteGivesItsTurn(t *testing.T) {
	f := newFairSlots(time.Minute, false)
	f.setLimit(4)
	a1, a2, a3 := mustRead(t, f, unitA), mustRead(t, f, unitA), mustRead(t, f, unitA)
	b := mustRead(t, f, unitB)
	cWait := queueRead(t, f, unitC)
	// A's write pauses: C, waiting, takes its slot.
	f.pause(a1)
	c := granted(t, cWait)
	f.pause(a1) // a second pause does nothing
	if used, running, paused := slotsOf(f, unitA); used != 4 || running != 2 || paused != 1 {
		t.Fatalf("after A's pause: %d in flight, A %d running, %d paused; want 4, 2, 1", used, running, paused)
	}
	// A's next write queues; a1, resuming, waits for a turn ahead of it.
	aWait := queueRead(t, f, unitA)
	resumed := resumeAsync(f, a1)
	waitFor(t, func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.units[unitA].waiting) == 2 && f.units[unitA].waiting[0] == a1
	}, "a1 waiting to resume first in A's queue")
	f.release(b)
	select {
	case err := <-resumed:
		if err != nil {
			t.Fatalf("resume: %s", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a1 never resumed after B's slot freed")
	}
	notGranted(t, aWait)
	if used, running, paused := slotsOf(f, unitA); used != 4 || running != 3 || paused != 0 {
		t.Fatalf("after a1 resumed: %d in flight, A %d running, %d paused; want 4, 3, 0", used, running, paused)
	}
	// Released while paused, a write gives back nothing more.
	f.pause(a2)
	f.release(a2)
	// The pause freed a slot for A's waiting write (A below its share).
	a4 := granted(t, aWait)
	if used, running, paused := slotsOf(f, unitA); used != 4 || running != 3 || paused != 0 {
		t.Fatalf("after a2's release while paused: %d in flight, A %d running, %d paused; want 4, 3, 0", used, running, paused)
	}
	// Released while it waits to resume, a write's resume ends with an error, and nothing is given back twice.
	f.pause(a3)
	d := mustRead(t, f, unitC)
	resumed = resumeAsync(f, a3)
	waitFor(t, func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.units[unitA].waiting) == 1
	}, "a3 waiting to resume")
	f.release(a3)
	select {
	case err := <-resumed:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("resume of a write released meanwhile: %v; want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the resume of a write released meanwhile never ended")
	}
	for _, h := range []*hold{a1, a4, c, d} {
		f.release(h)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.used != 0 || len(f.turns) != 0 || writeStats.queued.Load() != 0 || writeStats.inFlight.Load() != 0 {
		t.Errorf("after every release: %d in flight, %d units waiting, %d queued, %d in the gauge", f.used, len(f.turns),
			writeStats.queued.Load(), writeStats.inFlight.Load())
	}
}

// TestPausedWriteKeepsItsUnit: a unit whose only write pauses is not swept, so that it resumes in its unit's queue,
// not in a second one of the same unit that would take turns of its own.
func TestPausedWriteKeepsItsUnit(t *testing.T) {
	f := newFairSlots(time.Minute, false)
	f.setLimit(4)
	a := mustRead(t, f, unitA)
	f.pause(a)
	f.mu.Lock()
	f.sweepLocked()
	q := f.units[unitA]
	f.mu.Unlock()
	if q != a.q {
		t.Fatal("the sweep dropped a unit whose write is paused")
	}
	if err := f.resume(a, a); err != nil {
		t.Fatal(err)
	}
	f.release(a)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.used != 0 || a.q.paused != 0 {
		t.Errorf("after the release: %d in flight, %d paused", f.used, a.q.paused)
	}
}

// TestPacedBody: a read of a write's body that waits on its client past stallGrace gives the write's turn up, and
// takes it again before it returns what came.
func TestPacedBody(t *testing.T) {
	f := newFairSlots(time.Minute, false)
	f.setLimit(4)
	h := mustRead(t, f, unitA)
	pr, pw := io.Pipe()
	body := pacedBodyOf(pr, h)
	defer body.Close()
	read := func() chan string {
		got := make(chan string, 1)
		go func() {
			p := make([]byte, 64)
			n, err := body.Read(p)
			if err != nil {
				t.Errorf("read: %s", err)
			}
			got <- string(p[:n])
		}()
		return got
	}
	got := read()
	if _, err := pw.Write([]byte("a 1\n")); err != nil {
		t.Fatal(err)
	}
	if s := <-got; s != "a 1\n" {
		t.Fatalf("read %q", s)
	}
	// The client waits: the turn goes back while it does.
	before := pausedWrites.Get()
	got = read()
	waitFor(t, func() bool {
		used, _, paused := slotsOf(f, unitA)
		return used == 0 && paused == 1
	}, "the write's turn given up while its client waits")
	if pausedWrites.Get() != before+1 {
		t.Errorf("vmgateway_write_backend_paused_total went from %d to %d; want one more", before, pausedWrites.Get())
	}
	// Another unit takes every slot but one while A's write waits on its client, and A's write, resuming when
	// more comes, waits for that one.
	bs := []*hold{mustRead(t, f, unitB), mustRead(t, f, unitB), mustRead(t, f, unitB)}
	c := mustRead(t, f, unitC)
	if _, err := pw.Write([]byte("b 2\n")); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-got:
		t.Fatalf("the write's read returned %q without its turn", s)
	case <-time.After(20 * time.Millisecond):
	}
	f.release(c)
	if s := <-got; s != "b 2\n" {
		t.Fatalf("read %q", s)
	}
	if used, running, paused := slotsOf(f, unitA); used != 4 || running != 1 || paused != 0 {
		t.Fatalf("after the resume: %d in flight, A %d running, %d paused; want 4, 1, 0", used, running, paused)
	}
	for _, b := range bs {
		f.release(b)
	}
	// The end of the body, after a wait, takes the turn again too: the backend works on its last block and answers.
	done := make(chan error, 1)
	go func() {
		_, err := body.Read(make([]byte, 8))
		done <- err
	}()
	waitFor(t, func() bool {
		used, _, _ := slotsOf(f, unitA)
		return used == 0
	}, "the turn given up before the body's end")
	pw.Close()
	if err := <-done; err != io.EOF {
		t.Fatalf("the body's end: %v; want EOF", err)
	}
	if used, running, _ := slotsOf(f, unitA); used != 1 || running != 1 {
		t.Fatalf("after the body's end: %d in flight, A %d running; want 1, 1", used, running)
	}
	f.release(h)
}

// TestPacedWriteBackends: a write's turn is given up while its client is slow only where every write backend the
// balancer may send to frees its slot while it waits on a body; one that holds it for the whole body, one not known,
// a fixed limit, or no capacity known at all, keeps the turn for the whole body.
func TestPacedWriteBackends(t *testing.T) {
	g, _ := newHeldGateway(t, 0)
	a := g.write.set.backends()[0].key
	for _, tc := range []struct {
		byKey map[string]BackendCapacity
		want  bool
	}{
		{map[string]BackendCapacity{a: {Slots: 4, Paced: true}, "b": {Slots: 4, Paced: true}}, true},
		{map[string]BackendCapacity{a: {Slots: 4, Paced: true}, "b": {Slots: 4}}, true}, // b is not one it sends to
		{map[string]BackendCapacity{a: {Slots: 4}, "b": {Slots: 4, Paced: true}}, false},
		{map[string]BackendCapacity{"b": {Slots: 4, Paced: true}}, false}, // a is not known
		{nil, false},
	} {
		g.SetWriteCapacity(tc.byKey, 1)
		if got := g.writes.paced.Load(); got != tc.want {
			t.Errorf("%v: paced %v; want %v", tc.byKey, got, tc.want)
		}
	}
	// A backend found since (discovery), whose /metrics is not read yet, may hold its slot for a whole body.
	g.SetWriteCapacity(map[string]BackendCapacity{a: {Slots: 4, Paced: true}}, 1)
	list := append(slices.Clone(g.write.set.backends()), &backend{key: "found since"})
	g.write.set.list.Store(&list)
	g.write.set.refreshSlots()
	if g.writes.paced.Load() {
		t.Error("paced with a backend found since whose capacity is not known")
	}
	g.SetWriteCapacity(map[string]BackendCapacity{a: {Slots: 4, Paced: true}, "found since": {Slots: 4, Paced: true}}, 1)
	if !g.writes.paced.Load() {
		t.Error("not paced once the backend found since is known to be")
	}
	g.SetWriteSlots(4)
	if g.writes.paced.Load() {
		t.Error("paced after -write.maxConcurrentRequests was fixed")
	}
}

// TestResumeWaitsPastAStaleGrant: a write granted its slot as its first wait ran out leaves that grant in its channel;
// resuming later with every slot taken, it must wait for a slot, not take that grant for one.
func TestResumeWaitsPastAStaleGrant(t *testing.T) {
	f := newFairSlots(time.Minute, false)
	f.setLimit(2)
	a := mustRead(t, f, unitA)
	a.granted = make(chan struct{}, 1)
	a.granted <- struct{}{}
	f.pause(a)
	b := mustRead(t, f, unitB)
	c := mustRead(t, f, unitC)
	resumed := resumeAsync(f, a)
	select {
	case err := <-resumed:
		t.Fatalf("resumed (%v) with both slots taken", err)
	case <-time.After(50 * time.Millisecond):
	}
	f.release(b)
	if err := <-resumed; err != nil {
		t.Fatal(err)
	}
	if used, running, paused := slotsOf(f, unitA); used != 2 || running != 1 || paused != 0 {
		t.Errorf("after the resume: %d in flight, A %d running, %d paused; want 2, 1, 0", used, running, paused)
	}
	f.release(a)
	f.release(c)
}

// TestWriteTurnPassesOn: a write sent fast keeps its turn while no other unit waits, and while its turn is younger
// than turnQuantum; past it, with a unit waiting that holds fewer, it passes the turn on at its next read and waits
// for its next one, so that a team's one-line write waits a quantum, not for another team's import to end. A unit
// holding none takes one of the turns reserved past the limit at once.
func TestWriteTurnPassesOn(t *testing.T) {
	unitD := unit{tenant: tenant.ID{AccountID: 4}}
	f := newFairSlots(time.Minute, false)
	f.paced.Store(true)
	f.setLimit(4)
	a := mustRead(t, f, unitA)
	body := pacedBodyOf(io.NopCloser(zeros{}), a)
	body.grace = time.Hour // no read here waits on its client, however loaded the machine
	p := make([]byte, 16)
	read := func() {
		t.Helper()
		if _, err := body.Read(p); err != nil {
			t.Fatal(err)
		}
	}
	before := yieldedWrites.Get()
	// A's own writes waiting take nothing from it.
	a2, a3 := mustRead(t, f, unitA), mustRead(t, f, unitA)
	a4 := queueRead(t, f, unitA)
	b := mustRead(t, f, unitB)
	// C, holding none, takes the one turn reserved past the 4: no read's loan.
	loans := lentReads.Get()
	c := mustRead(t, f, unitC)
	if lentReads.Get() != loans || c.lent {
		t.Error("a write's reserved turn was counted as a read's loan")
	}
	time.Sleep(turnQuantum + 5*time.Millisecond)
	read()
	if yieldedWrites.Get() != before {
		t.Fatal("a write passed its turn on to its own unit")
	}
	// D waits, holding nothing, the reserve taken: A's write passes its turn on at its next read, and waits for the
	// next one.
	dWait := queueRead(t, f, unitD)
	done := make(chan struct{})
	go func() {
		defer close(done)
		read()
	}()
	d := granted(t, dWait)
	if yieldedWrites.Get() != before+1 {
		t.Errorf("vmgateway_write_backend_yielded_total went from %d to %d; want one more", before, yieldedWrites.Get())
	}
	select {
	case <-done:
		t.Fatal("the write read on after passing its turn on, without a turn")
	case <-time.After(20 * time.Millisecond):
	}
	// B's end and C's free a turn within the limit: A's write, first in its unit, takes it before A's write that
	// waited.
	f.release(b)
	f.release(c)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the write that passed its turn on never took another")
	}
	notGranted(t, a4)
	// A fresh turn: no passing on before turnQuantum, whoever waits.
	dWait = queueRead(t, f, unitD)
	f.mu.Lock()
	a.grantedAt = f.clock()
	f.mu.Unlock()
	if f.yield(a) {
		t.Fatal("a write passed on a turn it had just taken")
	}
	for _, h := range []*hold{a, a2, a3, d} {
		f.release(h)
	}
	for _, w := range []<-chan *hold{a4, dWait} {
		f.release(granted(t, w))
	}
	if used, _, paused := slotsOf(f, unitA); used != 0 || paused != 0 {
		t.Errorf("after every release: %d in flight, %d paused", used, paused)
	}
}

// zeros is a client that sends as fast as it is read.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// TestTurnsCycle: a unit that begins to wait goes last in the turns' cycle. Appended at the end, units that came and
// went one read at a time were served again and again ahead of a unit waiting with several, whose reads tied with
// theirs (an attacker's review): here C's second read waited for ever while A and B took the one slot in turn.
func TestTurnsCycle(t *testing.T) {
	f := newFairSlots(time.Minute, true)
	f.setLimit(1)
	h := mustRead(t, f, unitA)
	c1Wait, c2Wait := queueRead(t, f, unitC), queueRead(t, f, unitC)
	waits := map[unit]<-chan *hold{unitB: queueRead(t, f, unitB)}
	f.release(h)
	h = granted(t, c1Wait)
	waits[unitA] = queueRead(t, f, unitA)
	// A and B come back as soon as each read of theirs ends: C's second read gets a turn within one cycle.
	for round := 0; ; round++ {
		f.release(h)
		select {
		case h = <-c2Wait:
			for range 2 {
				f.release(h)
				select {
				case h = <-waits[unitA]:
				case h = <-waits[unitB]:
				case <-time.After(5 * time.Second):
					t.Fatal("A's or B's read never got the slot freed")
				}
			}
			f.release(h)
			return
		case h = <-waits[unitA]:
			waits[unitA] = queueRead(t, f, unitA)
		case h = <-waits[unitB]:
			waits[unitB] = queueRead(t, f, unitB)
		case <-time.After(5 * time.Second):
			t.Fatal("no read got the slot freed")
		}
		if round == 3 {
			t.Fatalf("C's second read still waits after %d turns of A and B", round+1)
		}
	}
}

// BenchmarkPacedBody: what a paced write's body costs per read (512 bytes, so that the read itself costs little), with many writes of several units in
// flight and nobody waiting (the common case): the pass-on check must not serialize the writes on the slots' lock.
//
// Run: go test -run '^$' -bench PacedBody -cpu 1,2,8 ./internal/gateway/
func BenchmarkPacedBody(b *testing.B) {
	f := newFairSlots(time.Minute, false)
	f.paced.Store(true)
	f.setLimit(1 << 20)
	var n atomic.Int64
	b.SetBytes(512)
	b.RunParallel(func(pb *testing.PB) {
		h, err := f.acquire(context.Background(), unit{tenant: tenant.ID{AccountID: uint32(n.Add(1) % 4)}})
		if err != nil {
			b.Error(err)
			return
		}
		defer f.release(h)
		body := pacedBodyOf(io.NopCloser(zeros{}), h)
		body.grace = time.Hour
		p := make([]byte, 512)
		for pb.Next() {
			if _, err := body.Read(p); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
