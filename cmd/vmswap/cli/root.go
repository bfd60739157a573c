// Package cli is vmswap's command line: one cobra command per file, each an
// XxxOptions (its dependencies and flag values), a NewCmdXxx constructor and
// an xxxRun function that tests drive with in-memory streams.
package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/vmswap/vmswap/plans"
	"github.com/vmswap/vmswap/plans/runner"
	"github.com/vmswap/vmswap/verify"
)

// Version is set at build time with -ldflags "-X ...cli.Version=v1.2.3".
var Version = "dev"

// IOStreams are a command's input and outputs.
type IOStreams struct {
	In     io.Reader
	Out    io.Writer // results and JSON
	ErrOut io.Writer // progress and warnings
	// IsTerminal reports whether stdin and stderr are a terminal: a person
	// is there to answer a question.
	IsTerminal bool
}

// Factory is what every command is built with.
type Factory struct {
	IO     *IOStreams
	Getenv func(string) string
	// Signals delivers interrupts (Ctrl-C, SIGTERM) to Main. Nil: none.
	Signals <-chan os.Signal
	// Exit ends the process at a second interrupt. Nil: os.Exit.
	Exit func(code int)
}

// ExitError carries an exit code out of a command.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string { return e.Err.Error() }
func (e *ExitError) Unwrap() error { return e.Err }

func exitf(code int, format string, args ...any) error {
	return &ExitError{Code: code, Err: fmt.Errorf(format, args...)}
}

// NewRootCmd builds the vmswap command tree.
func NewRootCmd(f *Factory) *cobra.Command {
	root := &cobra.Command{
		Use:   "vmswap",
		Short: "Upgrade a live server to a bigger one without a single failed request",
		Long: `vmswap snapshots a running server, launches a larger one from the image, verifies it
from the inside (SSH) and the outside (HTTP with the public Host and SNI), moves traffic
to it (load balancer, DNS record or reserved IP), watches it under live traffic, and only
then retires the old server. Any failure rolls back.

Exit codes: 0 ok; 1 failed and rolled back (the source serves); 2 bad input or stale
plan (nothing changed); 3 failed and needs attention (the message says what to run);
4 paused for a decision (a gate, or writes nothing carried): apply --continue or rollback.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(f.IO.Out)
	root.SetErr(f.IO.ErrOut)
	root.AddCommand(NewCmdApply(f, nil), NewCmdPlan(f, nil), NewCmdUpgrade(f, nil), NewCmdValidate(f, nil),
		NewCmdStatus(f, nil), NewCmdSchema(f, nil), NewCmdVersion(f), NewCmdDemo(f, nil), NewCmdLab(f),
		NewCmdRollback(f, nil), NewCmdCleanup(f, nil), NewCmdPreview(f, nil))
	return root
}

// Main runs the CLI and returns the process exit code.
//
// Every command runs under a context that the first SIGINT or SIGTERM
// cancels: reads, provider calls and waits stop, and apply stops at its next
// safe point. A second signal quits at once with exit 3.
func Main(args []string, f *Factory) int {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if f.Signals != nil {
		// The second interrupt's wait ends when Main returns, not when ctx
		// is cancelled: the first interrupt cancels ctx, and waiting on it
		// made the second one a no-op (a rollback waiting on a silent
		// nameserver could then be stopped only by kill -9).
		done := make(chan struct{})
		defer close(done)
		exit := f.Exit
		if exit == nil {
			exit = os.Exit
		}
		go func() {
			select {
			case <-f.Signals:
			case <-done:
				return
			}
			cancel()
			select {
			case <-f.Signals:
				fmt.Fprintln(f.IO.ErrOut, "vmswap: interrupted twice: quitting now; run the same command again to continue")
				exit(runner.ExitAttention)
			case <-done:
			}
		}()
	}
	root := NewRootCmd(f)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var ee *ExitError
	if ctx.Err() != nil && !(errors.As(err, &ee) && ee.Err != nil && ee.Err.Error() == "") {
		// Ctrl-C or SIGTERM outside a run (a run reports its own stop):
		// what was going on stopped, whatever error it ended with.
		fmt.Fprintln(f.IO.ErrOut, "vmswap: interrupted; run the same command again to start over")
		return runner.ExitAttention
	}
	var pe plans.Errors
	if errors.As(err, &pe) {
		// file:line:col: message lines, as compilers print them.
		fmt.Fprintln(f.IO.ErrOut, pe.Error())
		return runner.ExitBadInput
	}
	if errors.As(err, &ee) {
		if ee.Err != nil && ee.Err.Error() != "" {
			fmt.Fprintln(f.IO.ErrOut, "Error:", ee.Err)
		}
		return ee.Code
	}
	fmt.Fprintln(f.IO.ErrOut, "Error:", err)
	return runner.ExitBadInput
}

// DefaultFactory is the factory of the real process.
func DefaultFactory(sig <-chan os.Signal) *Factory {
	return &Factory{
		// What is read later from a pipe or a log is as safe as what is
		// read now: a plan's YAML and JSON events hold no raw controls
		// (their encoders escape them), and the escape termSafe writes
		// decodes to the same character inside their strings.
		IO:      &IOStreams{In: os.Stdin, Out: termSafe{os.Stdout}, ErrOut: termSafe{os.Stderr}, IsTerminal: term.IsTerminal(int(os.Stdin.Fd())) && term.IsTerminal(int(os.Stderr.Fd()))},
		Getenv:  os.Getenv,
		Signals: sig,
	}
}

var digitRuns = regexp.MustCompile(`[0-9]+`)

// printer renders runner events: text on stderr for people, or one JSON
// object per line on stdout.
type printer struct {
	io    *IOStreams
	json  bool
	start time.Time

	mu       sync.Mutex
	lastProg string
	lastAt   time.Time
	// swap is the swap the last event was about: drivers' progress is
	// about it too (swaps run one at a time).
	swap string
}

func newPrinter(io *IOStreams, output string) (*printer, error) {
	switch output {
	case "", "text":
		return &printer{io: io, start: time.Now()}, nil
	case "json":
		return &printer{io: io, json: true, start: time.Now()}, nil
	}
	return nil, exitf(runner.ExitBadInput, "--output %q: use text or json", output)
}

func (p *printer) emit(e runner.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if e.Swap != "" {
		p.swap = e.Swap
	}
	if p.json {
		if e.Time.IsZero() {
			e.Time = time.Now().UTC()
		}
		b, _ := json.Marshal(e)
		fmt.Fprintln(p.io.Out, string(b))
		return
	}
	el := time.Since(p.start).Round(100 * time.Millisecond)
	prefix := fmt.Sprintf("[%6s]", fmtElapsed(el))
	if e.Swap != "" {
		prefix += " " + e.Swap + ":"
	}
	switch e.Event {
	case "progress":
		// Waits repeat every poll; show a repeated wait at most once a
		// second. A repeat is the same swap's same line but for its
		// numbers (the time waited so far); the swaps of a wave each have
		// their own lines.
		key := e.Swap + "\x00" + digitRuns.ReplaceAllString(e.Message, "#")
		if key == p.lastProg && time.Since(p.lastAt) < time.Second {
			return
		}
		p.lastProg, p.lastAt = key, time.Now()
		fmt.Fprintf(p.io.ErrOut, "%s %s\n", prefix, e.Message)
	case "step":
		switch e.Status {
		case "started":
			fmt.Fprintf(p.io.ErrOut, "%s %s ...\n", prefix, e.Step)
		case "ok":
			fmt.Fprintf(p.io.ErrOut, "%s %s done (%.1fs)\n", prefix, e.Step, e.Elapsed)
		default:
			fmt.Fprintf(p.io.ErrOut, "%s %s %s: %s\n", prefix, e.Step, strings.ToUpper(e.Status), e.Message)
		}
	case "check":
		mark := "ok  "
		if e.Status != "ok" {
			mark = "FAIL"
		}
		fmt.Fprintf(p.io.ErrOut, "%s   %s %s\n", prefix, mark, e.Message)
	case "warning":
		fmt.Fprintf(p.io.ErrOut, "%s warning: %s\n", prefix, e.Message)
	default:
		fmt.Fprintf(p.io.ErrOut, "%s %s\n", prefix, e.Message)
	}
}

// fail reports an error that ends a command before or outside a run. With
// --output json it is an event on stdout ({"event":"error",...}) so that a
// machine reading the stream sees why; the exit code is the error's.
func (p *printer) fail(err error) error {
	if err == nil || !p.json {
		return err
	}
	code := runner.ExitBadInput
	var ee *ExitError
	if errors.As(err, &ee) {
		code = ee.Code
	}
	b, _ := json.Marshal(struct {
		Event    string    `json:"event"`
		Time     time.Time `json:"time"`
		Message  string    `json:"message"`
		ExitCode int       `json:"exit_code"`
	}{"error", time.Now().UTC(), err.Error(), code})
	p.mu.Lock()
	fmt.Fprintln(p.io.Out, string(b))
	p.mu.Unlock()
	return &ExitError{Code: code, Err: errors.New("")}
}

// progress adapts the printer for drivers.
func (p *printer) progress(format string, args ...any) {
	p.mu.Lock()
	swap := p.swap
	p.mu.Unlock()
	p.emit(runner.Event{Event: "progress", Swap: swap, Message: fmt.Sprintf(format, args...)})
}

func fmtElapsed(d time.Duration) string {
	if d < time.Minute {
		return fmt.Sprintf("%.1fs", d.Seconds())
	}
	return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
}

// summary prints the outcome: a table for people, the summary event for
// machines.
func (p *printer) summary(res *runner.Result) {
	if p.json {
		b, _ := json.Marshal(struct {
			Event  string              `json:"event"`
			Time   time.Time           `json:"time"`
			Status string              `json:"status"`
			Swaps  []runner.SwapResult `json:"swaps"`
			Next   string              `json:"next,omitempty"`
		}{"summary", time.Now().UTC(), string(res.Status), res.Swaps, res.Next})
		fmt.Fprintln(p.io.Out, string(b))
		return
	}
	w := p.io.Out
	if len(res.Swaps) > 0 { // none when there was nothing to do
		fmt.Fprintf(w, "\n%-14s %-22s %-12s %-12s %9s %7s %8s %8s %8s\n", "SOURCE", "NEW", "CUTOVER", "STATUS", "REQUESTS", "FAILED", "P50", "P99", "TIME")
	}
	for _, s := range res.Swaps {
		fmt.Fprintf(w, "%-14s %-22s %-12s %-12s %9d %7d %7.1fms %7.1fms %7.1fs\n", s.Source, dash(s.New), s.Cutover, s.Status, s.Requests, s.Failed, s.P50ms, s.P99ms, s.DurationS)
	}
	for _, s := range res.Swaps {
		if c := s.Carried; c != nil {
			fmt.Fprintf(w, "%s: carried %d files (%s) in %d passes, %d deleted, %d conflicts\n", s.Source, c.Files, verify.HumanBytes(float64(c.Bytes)), c.Passes, c.Deleted, c.Conflicts)
		}
		if s.Diverged != nil && *s.Diverged > 0 {
			fmt.Fprintf(w, "%s: wrote %d files after its snapshot that nothing carried (listed above and in the journal)\n", s.Source, *s.Diverged)
		}
		if s.Writes != nil {
			fmt.Fprintf(w, "%s: %s\n", s.Source, s.Writes)
		}
	}
	fmt.Fprintf(w, "\nvmswap: %s\n", res.Status)
	for _, s := range res.Swaps {
		for _, warn := range s.Warnings {
			fmt.Fprintf(p.io.ErrOut, "warning: %s: %s\n", s.Source, warn)
		}
	}
	if res.Next != "" {
		fmt.Fprintln(p.io.ErrOut, res.Next)
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// planErrors turns plan problems into an exit-2 error that prints each on
// its own line.
func planErrors(err error) error {
	return &ExitError{Code: runner.ExitBadInput, Err: err}
}

// confirm asks, as Terraform does, before a command changes production:
// only "yes" goes on. --yes skips the question; without a terminal to ask
// on, the command refuses (exit 2): a CI job must say --yes explicitly.
func confirm(io *IOStreams, yes bool, refuse string) error {
	if yes {
		return nil
	}
	if !io.IsTerminal {
		return exitf(runner.ExitBadInput, "%s: no terminal to ask on, so pass --yes to go ahead", refuse)
	}
	fmt.Fprint(io.ErrOut, "\nDo you want to perform these actions? Only 'yes' will be accepted: ")
	line, err := bufio.NewReader(io.In).ReadString('\n')
	if strings.TrimSpace(line) != "yes" {
		if err != nil && line == "" {
			fmt.Fprintln(io.ErrOut)
		}
		return exitf(runner.ExitBadInput, "%s: the answer was not 'yes'", refuse)
	}
	return nil
}
