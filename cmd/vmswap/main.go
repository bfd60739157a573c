// Command vmswap upgrades a live cloud server to a bigger one without a
// single failed request. See `vmswap --help`.
package main

import (
	"os"
	"os/signal"
	"syscall"

	"github.com/vmswap/vmswap/cmd/vmswap/cli"
)

func main() {
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	// A closed output pipe (`vmswap apply ... | head`, an SSH session
	// gone) makes writes fail instead of killing the run mid-swap: the
	// run goes on, and its journal says everything.
	signal.Ignore(syscall.SIGPIPE)
	os.Exit(cli.Main(os.Args[1:], cli.DefaultFactory(sig)))
}
