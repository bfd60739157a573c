package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/vmswap/vmswap/plans"
	"github.com/vmswap/vmswap/report"
)

// ApplyOptions are the inputs of `vmswap apply`.
type ApplyOptions struct {
	IO        *IOStreams
	Getenv    func(string) string
	Signals   <-chan os.Signal
	PlanFile  string
	Output    string
	BreakLock bool
	Report    string
	// Poll overrides the drivers' and runner's poll interval (tests, the lab).
	Poll time.Duration
	// Clock overrides the runner's clock (tests).
	Clock plans.Clock
	// AfterSave is passed to the runner (crash tests).
	AfterSave func(int)
	// Comparisons are drawn in the report beside the swaps (demo --compare).
	Comparisons []report.Comparison
	// Summary, if set, receives the result before it is printed.
	Summary func(*plans.Result)
	// printer, if set, is used instead of a new one (the demo's, so the
	// elapsed times run on).
	printer *printer
}

// NewCmdApply builds `vmswap apply PLAN`.
func NewCmdApply(f *Factory, runF func(*ApplyOptions) error) *cobra.Command {
	opts := &ApplyOptions{IO: f.IO, Getenv: f.Getenv, Signals: f.Signals}
	cmd := &cobra.Command{
		Use:   "apply PLAN",
		Short: "Run a plan: snapshot, launch, verify, cut over, observe, retire",
		Long: `Apply runs a plan file. It re-reads the world first and refuses a plan whose world
has changed since it was written. Progress is journalled beside the plan after every
state change: running apply again on the same plan continues where it stopped, and
never creates a second server or snapshot. Ctrl-C stops cleanly.`,
		Example: "  vmswap apply web-1.yaml\n  vmswap apply --output json web-1.yaml",
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
	return cmd
}

// addRunFlags adds the flags of every command that runs a plan's journal
// (apply, rollback).
func addRunFlags(cmd *cobra.Command, opts *ApplyOptions) {
	cmd.Flags().StringVarP(&opts.Output, "output", "o", "text", "text or json (one event per line on stdout)")
	cmd.Flags().BoolVar(&opts.BreakLock, "break-lock", false, "remove a lock left by a vmswap that is no longer running")
	cmd.Flags().DurationVar(&opts.Poll, "poll", 0, "how often to poll the provider (default 2s)")
	cmd.Flags().MarkHidden("poll")
}

func newRunID() string {
	b := make([]byte, 6)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// loadForApply loads a plan and its journal under the lock, and builds the
// drivers: everything apply, rollback and upgrade need before a run.
func loadForApply(opts *ApplyOptions, pr *printer, command string) (*plans.Document, *plans.Journal, *plans.Lock, map[string]*plans.Drivers, error) {
	doc, err := plans.Load(opts.PlanFile)
	if err != nil {
		return nil, nil, nil, nil, planErrors(err)
	}
	lock, err := plans.AcquireLock(plans.LockPath(opts.PlanFile), command, opts.BreakLock)
	if err != nil {
		return nil, nil, nil, nil, exitf(plans.ExitBadInput, "%v", err)
	}
	fail := func(e error) (*plans.Document, *plans.Journal, *plans.Lock, map[string]*plans.Drivers, error) {
		lock.Release()
		return nil, nil, nil, nil, e
	}
	jpath := plans.JournalPath(opts.PlanFile)
	j, err := plans.LoadJournal(jpath)
	if err != nil {
		return fail(exitf(plans.ExitAttention, "%v", err))
	}
	if j != nil && j.PlanHash != doc.Hash() {
		return fail(exitf(plans.ExitBadInput, "%s changed since the run in %s started: finish that run with the original plan, or undo it with `vmswap rollback`", opts.PlanFile, jpath))
	}
	cp, err := parseCrash(opts.Getenv)
	if err != nil {
		return fail(exitf(plans.ExitBadInput, "%v", err))
	}
	if cp != nil {
		opts.AfterSave = cp.afterSave()
	}
	drivers, err := plans.Build(doc.Plan, plans.BuildOptions{Getenv: opts.Getenv, Progress: pr.progress, PollInterval: opts.Poll, HTTPClient: cp.httpClient()})
	if err != nil {
		return fail(exitf(plans.ExitBadInput, "%v", err))
	}
	return doc, j, lock, drivers, nil
}

func applyRun(ctx context.Context, opts *ApplyOptions) error {
	pr := opts.printer
	if pr == nil {
		var err error
		if pr, err = newPrinter(opts.IO, opts.Output); err != nil {
			return err
		}
	}
	doc, j, lock, drivers, err := loadForApply(opts, pr, "apply "+opts.PlanFile)
	if err != nil {
		return err
	}
	defer lock.Release()
	jpath := plans.JournalPath(opts.PlanFile)
	switch {
	case j == nil:
		j = plans.NewJournal(jpath, doc, newRunID())
	case j.Status == plans.StatusSucceeded:
		pr.emit(plans.Event{Event: "warning", Message: fmt.Sprintf("%s was already applied (run %s, %s); nothing to do", opts.PlanFile, j.RunID, j.Updated.Format(time.RFC3339))})
		pr.summary(&plans.Result{Status: plans.StatusSucceeded})
		return nil
	case j.Status == plans.StatusRolledBack || allPreflightFailed(j):
		// The last run left nothing half-done: start a new one, keeping the
		// swaps it completed.
		os.Rename(jpath, jpath+".prev")
		j = plans.NextRun(j, jpath, doc, newRunID())
	default:
		pr.emit(plans.Event{Event: "progress", Message: fmt.Sprintf("resuming run %s from %s", j.RunID, jpath)})
	}
	res := run(ctx, opts, doc, j, drivers, pr)
	if opts.Report != "" {
		if err := writeReport(opts.Report, doc, j, res, opts.Comparisons...); err != nil {
			pr.emit(plans.Event{Event: "warning", Message: "report: " + err.Error()})
		}
	}
	if opts.Summary != nil {
		opts.Summary(res)
	}
	pr.summary(res)
	if res.ExitCode != 0 {
		return &ExitError{Code: res.ExitCode, Err: errors.New("")}
	}
	return nil
}

func allPreflightFailed(j *plans.Journal) bool {
	for _, s := range j.Swaps {
		if l := s.Steps["preflight"]; l != nil && l.Status != "failed" {
			return false
		}
		if len(s.Done) > 0 {
			return false
		}
	}
	return j.Status == plans.StatusFailed
}

// run runs the runner with Ctrl-C wired to a clean stop.
func run(ctx context.Context, opts *ApplyOptions, doc *plans.Document, j *plans.Journal, drivers map[string]*plans.Drivers, pr *printer) *plans.Result {
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if opts.Signals != nil {
		go func() {
			select {
			case <-opts.Signals:
				pr.emit(plans.Event{Event: "warning", Message: "interrupt: stopping at the next safe point (press Ctrl-C again to quit at once)"})
				cancel()
				select {
				case <-opts.Signals:
					os.Exit(plans.ExitAttention)
				case <-ctx.Done():
				}
			case <-ctx.Done():
			}
		}()
	}
	r := &plans.Runner{Doc: doc, Drivers: drivers, Journal: j, Emit: pr.emit, Clock: opts.Clock, Poll: opts.Poll, AfterSave: opts.AfterSave, PlanFile: opts.PlanFile}
	return r.Run(ctx)
}
