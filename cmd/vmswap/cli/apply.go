package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/vmswap/vmswap/plans"
	"github.com/vmswap/vmswap/plans/registry"
	"github.com/vmswap/vmswap/plans/runner"
	"github.com/vmswap/vmswap/plans/state"
	"github.com/vmswap/vmswap/report"
)

// ApplyOptions are the inputs of `vmswap apply`.
type ApplyOptions struct {
	IO       *IOStreams
	Getenv   func(string) string
	PlanFile string
	// Finish finishes the last run with the plan it recorded.
	Finish bool
	// Continue goes on with a run paused for a decision (exit 4).
	Continue bool
	// Yes answers the question upgrade and rollback ask before a change.
	Yes       bool
	Output    string
	BreakLock bool
	Report    string
	// Poll overrides the drivers' and runner's poll interval (tests, the lab).
	Poll time.Duration
	// Clock overrides the runner's clock (tests).
	Clock runner.Clock
	// AfterSave is passed to the runner (crash tests).
	AfterSave func(int)
	// AfterCopy is passed to the runner (crash tests).
	AfterCopy func(pass string, n int)
	// Comparisons are drawn in the report beside the swaps (demo --compare).
	Comparisons []report.Comparison
	// Summary, if set, receives the result before it is printed.
	Summary func(*runner.Result)
	// printer, if set, is used instead of a new one (the demo's, so the
	// elapsed times run on).
	printer *printer
}

// NewCmdApply builds `vmswap apply PLAN`.
func NewCmdApply(f *Factory, runF func(*ApplyOptions) error) *cobra.Command {
	opts := &ApplyOptions{IO: f.IO, Getenv: f.Getenv}
	cmd := &cobra.Command{
		Use:   "apply PLAN",
		Short: "Run a plan: snapshot, launch, verify, cut over, observe, retire",
		Long: `Apply runs a plan file. It re-reads the world first and refuses a plan whose world
has changed since it was written. Progress is journalled beside the plan after every
state change: running apply again on the same plan continues where it stopped, and
never creates a second server or snapshot. Ctrl-C stops cleanly.

What apply does depends on the plan's last run: none, or one that ended (rolled
back, refused, switched back by rollback): a new run; interrupted: resume it (if
the plan file changed since, refuse; --finish resumes with the plan the run
recorded); paused for a decision (exit 4): --continue goes on; succeeded with this
plan: nothing to do.`,
		Example: "  vmswap apply web-1.yaml\n  vmswap apply --output json web-1.yaml\n  vmswap apply --finish web-1.yaml\n  vmswap apply --continue web-1.yaml",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.PlanFile = args[0]
			if runF != nil {
				return runF(opts)
			}
			return applyRun(cmd.Context(), opts)
		},
	}
	addRunFlags(cmd, opts)
	cmd.Flags().StringVar(&opts.Report, "report", "", "write an HTML report of the swap to this file")
	cmd.Flags().BoolP("resume", "r", false, "continue from the journal (the default whenever one exists)")
	cmd.Flags().BoolVar(&opts.Finish, "finish", false, "finish the interrupted run with the plan it recorded, even if the plan file changed since")
	cmd.Flags().BoolVar(&opts.Continue, "continue", false, "go on with a run paused for a decision (exit code 4), with the plan it recorded")
	cmd.MarkFlagsMutuallyExclusive("finish", "continue")
	return cmd
}

// addRunFlags adds the flags of every command that runs a plan's journal
// (apply, rollback).
func addRunFlags(cmd *cobra.Command, opts *ApplyOptions) {
	cmd.Flags().StringVarP(&opts.Output, "output", "o", "text", "text or json (one event per line on stdout)")
	// A local lock is an OS lock that a killed vmswap releases: nothing to
	// break there. A remote lock's lease can outlive a killed holder.
	cmd.Flags().BoolVar(&opts.BreakLock, "break-lock", false, "take over a remote state lock (state: s3) whose lease still runs, when its holder is gone for sure; a local lock is released by the kernel when its vmswap ends")
	cmd.Flags().DurationVar(&opts.Poll, "poll", 0, "how often to poll the provider (default 2s)")
	cmd.Flags().MarkHidden("poll")
}

func newRunID() string {
	b := make([]byte, 6)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// openSession opens the plan file's runs for cmd and builds the drivers of
// the plan the session acts on: everything apply, rollback and upgrade need
// before a run. A decision to do nothing or to refuse comes back with no
// drivers and no lock.
func openSession(opts *ApplyOptions, pr *printer, cmd runner.Command) (*runner.Session, map[string]*registry.Drivers, error) {
	sess, err := runner.OpenSessionWith(opts.PlanFile, cmd, runner.SessionOptions{BreakLock: opts.BreakLock, NewRunID: newRunID, Getenv: opts.Getenv,
		Note: func(m string) { pr.emit(runner.Event{Event: "warning", Message: m}) }})
	if err != nil {
		var pe plans.Errors
		if errors.As(err, &pe) {
			return nil, nil, planErrors(err)
		}
		var le *runner.LockedError
		var rle *state.LockedError
		if errors.As(err, &le) || errors.As(err, &rle) {
			return nil, nil, exitf(runner.ExitBadInput, "%v", err)
		}
		if errors.Is(err, state.ErrUnavailable) || errors.Is(err, state.ErrConflict) {
			return nil, nil, exitf(runner.ExitBadInput, "nothing was changed: %v", err)
		}
		return nil, nil, exitf(runner.ExitAttention, "%v", err)
	}
	if err := sess.Decision.Refusal(); err != nil {
		return nil, nil, exitf(runner.ExitBadInput, "%v", err)
	}
	if sess.Lock == nil {
		return sess, nil, nil
	}
	cp, err := parseCrash(opts.Getenv)
	if err != nil {
		sess.Close()
		return nil, nil, exitf(runner.ExitBadInput, "%v", err)
	}
	if cp != nil {
		opts.AfterSave = cp.afterSave()
		opts.AfterCopy = cp.afterCopy()
	}
	drivers, err := registry.Build(sess.Doc.Plan, registry.BuildOptions{Getenv: opts.Getenv, Progress: pr.progress, PollInterval: opts.Poll, HTTPClient: cp.httpClient()})
	if err != nil {
		sess.Close()
		return nil, nil, exitf(runner.ExitBadInput, "%v", err)
	}
	teachDurations(opts.Getenv, sess.Doc.Plan, drivers)
	return sess, drivers, nil
}

func applyRun(ctx context.Context, opts *ApplyOptions) error {
	pr := opts.printer
	if pr == nil {
		var err error
		if pr, err = newPrinter(opts.IO, opts.Output); err != nil {
			return err
		}
	}
	cmd := runner.CmdApply
	switch {
	case opts.Finish:
		cmd = runner.CmdFinish
	case opts.Continue:
		cmd = runner.CmdContinue
	}
	if err := checkReportPath(opts.Report, opts.PlanFile); err != nil {
		return pr.fail(exitf(runner.ExitBadInput, "%v", err))
	}
	sess, drivers, err := openSession(opts, pr, cmd)
	if err != nil {
		return pr.fail(err)
	}
	if sess.Lock == nil { // nothing to do
		pr.emit(runner.Event{Event: "progress", Message: sess.Decision.Why})
		status := runner.State("none")
		if sess.Journal != nil {
			status = sess.Journal.Status
		}
		pr.summary(&runner.Result{Status: status})
		return nil
	}
	defer sess.Close()
	defer keepDurations(opts.Getenv, sess.Doc.Plan, drivers)
	j := sess.Journal
	if sess.Decision.Action == runner.ActResume {
		pr.emit(runner.Event{Event: "progress", Message: fmt.Sprintf("resuming run %s (%s) from %s", j.RunID, j.Status, j.Path())})
		if sess.PlanChanged {
			pr.emit(runner.Event{Event: "warning", Message: fmt.Sprintf("%s changed since run %s started: the run goes on with the plan it recorded; apply the file once the run is finished", opts.PlanFile, j.RunID)})
		}
	} else if len(j.History) > 0 {
		pr.emit(runner.Event{Event: "progress", Message: fmt.Sprintf("starting run %s (the last run, %s, is %s)", j.RunID, j.History[len(j.History)-1].RunID, j.History[len(j.History)-1].Status)})
	}
	res := run(ctx, opts, sess.Doc, j, drivers, pr)
	if opts.Report != "" {
		if err := writeReport(opts.Report, sess.Doc, j, res, opts.Comparisons...); err != nil {
			pr.emit(runner.Event{Event: "warning", Message: "report: " + err.Error()})
		}
	}
	if opts.Summary != nil {
		opts.Summary(res)
	}
	pr.summary(res)
	if f := opts.Getenv("GITHUB_STEP_SUMMARY"); f != "" {
		if err := writeStepSummary(f, opts.PlanFile, res); err != nil {
			pr.emit(runner.Event{Event: "warning", Message: "GITHUB_STEP_SUMMARY: " + err.Error()})
		}
	}
	if res.ExitCode != 0 {
		return &ExitError{Code: res.ExitCode, Err: errors.New("")}
	}
	return nil
}

// run runs the runner; the first interrupt (ctx) stops it at the next safe
// point, a second quits at once (root.go).
func run(ctx context.Context, opts *ApplyOptions, doc *plans.Document, j *runner.Journal, drivers map[string]*registry.Drivers, pr *printer) *runner.Result {
	if ctx == nil {
		ctx = context.Background()
	}
	stop := context.AfterFunc(ctx, func() {
		pr.emit(runner.Event{Event: "warning", Message: "interrupt: stopping at the next safe point; a rollback under way runs to its end, since stopping it half-way would leave traffic split (press Ctrl-C again to quit at once)"})
	})
	defer stop()
	r := &runner.Runner{Doc: doc, Drivers: drivers, Journal: j, Emit: pr.emit, Clock: opts.Clock, Poll: opts.Poll, AfterSave: opts.AfterSave, AfterCopy: opts.AfterCopy, PlanFile: opts.PlanFile, Finish: opts.Finish || opts.Continue, Continue: opts.Continue}
	return r.Run(ctx)
}

// writeStepSummary appends the swap table, in Markdown, to the file GitHub
// Actions shows on the run's page.
func writeStepSummary(file, plan string, res *runner.Result) error {
	f, err := os.OpenFile(file, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	var b strings.Builder
	fmt.Fprintf(&b, "### vmswap %s: %s\n\n", plan, res.Status)
	b.WriteString("| source | new | cutover | status | requests | failed | p99 | time |\n|---|---|---|---|---:|---:|---:|---:|\n")
	for _, s := range res.Swaps {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %d | %d | %.1f ms | %.1f s |\n", mdCell(s.Source), mdCell(dash(s.New)), s.Cutover, s.Status, s.Requests, s.Failed, s.P99ms, s.DurationS)
	}
	if res.Next != "" {
		fmt.Fprintf(&b, "\n%s\n", mdCell(res.Next))
	}
	_, err = f.WriteString(b.String() + "\n")
	return err
}

func mdCell(s string) string { return strings.NewReplacer("|", "\\|", "\n", " ").Replace(s) }
