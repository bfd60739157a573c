//go:build unix

package cli

import (
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestDurationsFIFO: a FIFO at the cache's path is not opened (opening it
// would wait for a writer for ever).
func TestDurationsFIFO(t *testing.T) {
	p := filepath.Join(t.TempDir(), "durations.json")
	if err := syscall.Mkfifo(p, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { readDurations(p); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("reading a FIFO as the cache hangs")
	}
}
