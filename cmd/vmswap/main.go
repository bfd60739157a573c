// Command vmswap upgrades a live cloud server to a bigger one without a
// single failed request. See `vmswap --help`.
package main

import (
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/vmswap/vmswap/cmd/vmswap/cli"
)

// memoryLimit is a soft limit for the Go heap. The probe allocates per
// request but keeps little (bounded summaries), so without a limit the
// collector lets the heap grow to twice what is live; with it, vmswap stays
// small beside the services it runs next to. GOMEMLIMIT overrides it.
const memoryLimit = 48 << 20

func main() {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(memoryLimit)
	}
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	os.Exit(cli.Main(os.Args[1:], cli.DefaultFactory(sig)))
}
