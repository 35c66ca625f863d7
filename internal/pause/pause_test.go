package pause

import (
	"crypto/sha256"
	"fmt"
	"testing"
)

func TestIDIsTheProgramsDigest(t *testing.T) {
	want := fmt.Sprintf("sha256:%x", sha256.Sum256([]byte(binary)))
	if got := ID(); got != want {
		t.Fatalf("ID() = %s, want %s (the digest of the %d-byte program)", got, want, len(binary))
	}
	if len(binary) <= 64<<10 {
		t.Fatalf("the program is %d bytes: too small to check hashing a piece at a time", len(binary))
	}
}
