package join

import "testing"

func TestFailureLimiter(t *testing.T) {
	var f failureLimiter
	for i := range failureBurst {
		if !f.allowed("192.0.2.1") {
			t.Fatalf("refused after %d failures, want %d tries", i, failureBurst)
		}
		f.failed("192.0.2.1")
	}
	if f.allowed("192.0.2.1") {
		t.Errorf("allowed after %d failures in a row", failureBurst)
	}
	if !f.allowed("192.0.2.2") {
		t.Error("another address is refused too")
	}
}
