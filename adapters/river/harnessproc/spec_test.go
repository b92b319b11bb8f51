package harnessproc

import "testing"

func TestDurationReplaysFromTheSeed(t *testing.T) {
	h := HandlerSpec{BaseMs: 40, JitterMs: 30, SlowFraction: 0.2, SlowS: 1}
	seed, other := uint64(7), uint64(8)
	distinct := map[int64]bool{}
	for call := int64(1); call <= 50; call++ {
		if h.Duration(call, &seed) != h.Duration(call, &seed) {
			t.Fatalf("call %d: two durations from one seed", call)
		}
		distinct[int64(h.Duration(call, &seed))] = true
	}
	if len(distinct) < 10 {
		t.Fatalf("only %d distinct durations", len(distinct))
	}
	same := 0
	for call := int64(1); call <= 50; call++ {
		if h.Duration(call, &seed) == h.Duration(call, &other) {
			same++
		}
	}
	if same > 15 {
		t.Fatalf("seeds 7 and 8 drew %d of 50 durations alike", same)
	}
}
