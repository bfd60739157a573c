package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/vmswap/vmswap/plans"
	"github.com/vmswap/vmswap/plans/runner"
)

// ValidateOptions are the inputs of `vmswap validate`.
type ValidateOptions struct {
	IO    *IOStreams
	Files []string
}

// NewCmdValidate builds `vmswap validate PLAN...`.
func NewCmdValidate(f *Factory, runF func(*ValidateOptions) error) *cobra.Command {
	opts := &ValidateOptions{IO: f.IO}
	return &cobra.Command{
		Use:   "validate PLAN...",
		Short: "Check plan files without touching any cloud",
		Long:  "Validate reports every problem of each plan as file:line:col: message, all at once. Exit 2 if any.",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Files = args
			if runF != nil {
				return runF(opts)
			}
			return validateRun(opts)
		},
	}
}

func validateRun(o *ValidateOptions) error {
	bad := 0
	for _, f := range o.Files {
		if _, err := plans.Load(f); err != nil {
			fmt.Fprintln(o.IO.ErrOut, err)
			bad++
			continue
		}
		fmt.Fprintf(o.IO.Out, "%s: ok\n", f)
	}
	if bad > 0 {
		return &ExitError{Code: runner.ExitBadInput, Err: fmt.Errorf("%d of %d plan(s) have problems", bad, len(o.Files))}
	}
	return nil
}

// StatusOptions are the inputs of `vmswap status`.
type StatusOptions struct {
	IO       *IOStreams
	Getenv   func(string) string
	PlanFile string
	Output   string
}

// NewCmdStatus builds `vmswap status PLAN`.
func NewCmdStatus(f *Factory, runF func(*StatusOptions) error) *cobra.Command {
	opts := &StatusOptions{IO: f.IO, Getenv: f.Getenv}
	cmd := &cobra.Command{
		Use:   "status PLAN",
		Short: "Show where the last run of a plan stands, from its journal",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.PlanFile = args[0]
			if runF != nil {
				return runF(opts)
			}
			return statusRun(opts)
		},
	}
	cmd.Flags().StringVarP(&opts.Output, "output", "o", "text", "text or json")
	return cmd
}

// StatusJSON is `vmswap status -o json`: the journal, and the lock.
type StatusJSON struct {
	*runner.Journal
	Lock *LockStatus `json:"lock,omitempty"`
	// RollbackOwed is set when a rollback started and did not finish: only
	// `vmswap rollback` goes on from there.
	RollbackOwed bool `json:"rollback_owed,omitempty"`
}

// LockStatus is who holds a plan's lock and whether that process still runs.
type LockStatus struct {
	runner.LockInfo
	Stale bool `json:"stale"`
}

func statusRun(o *StatusOptions) error {
	getenv := o.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	var lock *LockStatus
	j, rlock, remote, err := runner.RemoteStatus(o.PlanFile, getenv)
	if !remote {
		j, err = runner.LoadJournal(runner.JournalPath(o.PlanFile))
		if li, lerr := runner.ReadLock(runner.LockPath(o.PlanFile)); lerr == nil && li != nil {
			lock = &LockStatus{LockInfo: li.LockInfo, Stale: !li.Held}
		}
	} else if rlock != nil {
		// A remote lock is live while its lease runs.
		lock = &LockStatus{LockInfo: runner.LockInfo{Host: rlock.Host, PID: rlock.PID, Started: rlock.Started, Command: rlock.Command}, Stale: time.Now().After(rlock.Until)}
	}
	if err != nil {
		if remote && !strings.Contains(err.Error(), "damaged") {
			return exitf(runner.ExitBadInput, "%v", err)
		}
		return exitf(runner.ExitAttention, "%v", err)
	}
	if j == nil {
		return exitf(runner.ExitBadInput, "%s has not been applied (no journal)", o.PlanFile)
	}
	gone := lock == nil || lock.Stale
	owed := j.RollbackOwed()
	if gone && (j.Status == runner.StatusRunning || owed && j.Status != runner.StatusInterrupted && j.Status != runner.StatusNeedsAttention) {
		// Its process is gone: a run, or a rollback of a finished one, that
		// stopped part-way.
		j.Status = runner.StatusInterrupted
	}
	if o.Output == "json" {
		b, _ := json.MarshalIndent(StatusJSON{Journal: j, Lock: lock, RollbackOwed: owed}, "", "  ")
		fmt.Fprintln(o.IO.Out, string(b))
		return nil
	}
	w := o.IO.Out
	fmt.Fprintf(w, "run %s of %s: %s (started %s, updated %s)\n", j.RunID, o.PlanFile, j.Status, j.Started.Format(time.RFC3339), j.Updated.Format(time.RFC3339))
	if lock != nil {
		if lock.Stale {
			fmt.Fprintf(w, "lock: left by %s, which is no longer running (the next apply or rollback takes it over)\n", lock.LockInfo)
		} else {
			fmt.Fprintf(w, "locked: %s\n", lock.LockInfo)
		}
	}
	if j.Wave > 0 {
		fmt.Fprintf(w, "fleet: wave %d", j.Wave)
		if len(j.GatesPassed) > 0 {
			fmt.Fprintf(w, "; gates passed: %s", strings.Join(j.GatesPassed, ", "))
		}
		fmt.Fprintln(w)
	}
	if j.Gate != "" && j.Status == runner.StatusPaused {
		fmt.Fprintf(w, "paused at the gate %s: `vmswap apply --continue %s` starts the next wave, `vmswap rollback %s` switches every upgraded server back\n", j.Gate, o.PlanFile, o.PlanFile)
	}
	// A swap not started yet has only the plan's name for its source.
	var planned []plans.Swap
	changed := false
	if doc, err := plans.Load(o.PlanFile); err == nil {
		changed = j.PlanHash != doc.Hash()
		if len(doc.Plan.Swaps) == len(j.Swaps) {
			planned = doc.Plan.Swaps
		}
	}
	for i, s := range j.Swaps {
		src := s.SourceName
		if src == "" && planned != nil {
			src = planned[i].Source.Server
		}
		newAt := dash(s.NewID)
		if s.NewIP != "" {
			newAt += " " + s.NewIP
		}
		fmt.Fprintf(w, "swap %d: %s  source %s (%s)  new %s (%s)\n", s.Index, s.Status, dash(src), dash(s.SourceID), dash(s.NewName), newAt)
		for _, name := range append(runner.Steps, "rollback") {
			l := s.Steps[name]
			if l == nil {
				continue
			}
			d := ""
			if !l.End.IsZero() {
				d = fmt.Sprintf(" %.1fs", l.End.Sub(l.Start).Seconds())
			}
			fmt.Fprintf(w, "  %-10s %s%s\n", name, l.Status, d)
		}
		if s.Error != "" {
			fmt.Fprintf(w, "  error: %s\n", s.Error)
		}
		rb := s.Steps["rollback"]
		switch {
		case rb != nil && rb.Status == "running" && (lock == nil || lock.Stale):
			// A switch back that was killed: the old server may be on.
			fmt.Fprintf(w, "  a rollback of this swap was stopped part-way: run `vmswap rollback %s` again to finish it\n", o.PlanFile)
		case s.SourceDeleted:
			fmt.Fprintf(w, "  old server %s deleted after its keep window (cleanup --expired): there is no switching back\n", s.SourceName)
		case !s.KeepUntil.IsZero() && s.Status == runner.StatusSucceeded && rb == nil:
			fmt.Fprintf(w, "  old server kept powered off until %s (vmswap rollback %s switches back)\n", s.KeepUntil.Format(time.RFC3339), o.PlanFile)
		}
		if s.Paused != "" && s.Status == runner.StatusPaused {
			fmt.Fprintf(w, "  paused (%s): `vmswap apply --continue %s` goes on, `vmswap rollback %s` undoes it\n", s.Paused, o.PlanFile, o.PlanFile)
		}
	}
	if lock != nil && !lock.Stale {
		fmt.Fprintf(w, "next: a vmswap is working on it now (%s): wait for it\n", lock.LockInfo)
	} else if d := runner.Decide(runner.CmdApply, j, changed, o.PlanFile); d.Action == runner.ActResume {
		fmt.Fprintf(w, "next: vmswap apply %s continues it; vmswap rollback %s undoes it\n", o.PlanFile, o.PlanFile)
	} else if d.Why != "" && d.Action == runner.ActRefuse {
		fmt.Fprintf(w, "next: %s\n", d.Why)
	}
	for i := len(j.History) - 1; i >= 0; i-- {
		h := j.History[i]
		fmt.Fprintf(w, "earlier run %s: %s (%s to %s)\n", h.RunID, h.Status, h.Started.Format(time.RFC3339), h.Ended.Format(time.RFC3339))
	}
	return nil
}

// NewCmdSchema builds `vmswap schema`.
func NewCmdSchema(f *Factory, runF func() error) *cobra.Command {
	return &cobra.Command{
		Use:   "schema",
		Short: "Print the plan file's JSON Schema, for editors",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := json.MarshalIndent(plans.Schema(), "", "  ")
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(f.IO.Out, string(b))
			return err
		},
	}
}

// NewCmdVersion builds `vmswap version`.
func NewCmdVersion(f *Factory) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, args []string) {
			fmt.Fprintln(f.IO.Out, versionLine())
		},
	}
}

// NewCmdUpgrade builds `vmswap upgrade`: plan and apply in one go.
func NewCmdUpgrade(f *Factory, runF func(*PlanOptions, *ApplyOptions) error) *cobra.Command {
	po := &PlanOptions{IO: f.IO, Getenv: f.Getenv}
	ao := &ApplyOptions{IO: f.IO, Getenv: f.Getenv}
	cmd := &cobra.Command{
		Use:   "upgrade",
		Short: "Plan and apply in one go (the plan is saved, so a stopped run can be continued)",
		Example: `  vmswap upgrade --source web-1 --size s-4vcpu-8gb --lb 4de7ac8b-...
  vmswap upgrade --source web-1 --size s-4vcpu-8gb --dns www.example.com --probe-url https://www.example.com/`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if po.Out == "" {
				what := po.Tag
				if len(po.Sources) > 0 {
					what = po.Sources[0]
				}
				po.Out = filepath.Clean(fmt.Sprintf("vmswap-%s-%s.yaml", strings.NewReplacer("/", "_", "\\", "_", "=", "_", ":", "_").Replace(what), time.Now().UTC().Format("20060102-150405")))
			}
			if runF != nil {
				return runF(po, ao)
			}
			// With --output json, a refusal is an error event on stdout too.
			fail := func(err error) error {
				if pr, perr := newPrinter(po.IO, ao.Output); perr == nil {
					return pr.fail(err)
				}
				return err
			}
			if !ao.Yes && !po.IO.IsTerminal {
				// Before anything is read from the provider.
				return fail(confirm(po.IO, false, "nothing was changed: upgrade asks before it changes anything"))
			}
			if ao.Output == "json" {
				po.Format = "json"
			}
			if err := planRun(cmd.Context(), po); err != nil {
				return fail(err)
			}
			if err := confirm(po.IO, ao.Yes, fmt.Sprintf("nothing was changed; the plan is saved in %s (apply it with `vmswap apply %s`)", po.Out, po.Out)); err != nil {
				return fail(err)
			}
			ao.PlanFile = po.Out
			return applyRun(cmd.Context(), ao)
		},
	}
	addPlanFlags(cmd, po)
	cmd.Flags().StringVar(&po.Out, "plan-file", "", "where to save the plan (default vmswap-<source>-<time>.yaml)")
	cmd.Flags().StringVar(&ao.Output, "output", "text", "text or json")
	cmd.Flags().StringVar(&ao.Report, "report", "", "write an HTML report of the swap to this file")
	cmd.Flags().BoolVarP(&ao.Yes, "yes", "y", false, "go ahead without asking (needed without a terminal, as in CI)")
	return cmd
}

var _ = context.Background

// versionLine is the version from the build: the release's, or the module
// version and commit the Go toolchain recorded (go install …@v1.2.3, or a
// build in a checkout).
func versionLine() string {
	v, commit, when, dirty, goVersion := Version, "", "", false, runtime.Version()
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				commit = s.Value
			case "vcs.time":
				when = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
	}
	out := "vmswap " + v
	var parts []string
	if commit != "" {
		c := commit[:min(12, len(commit))]
		if dirty {
			c += " with local changes"
		}
		parts = append(parts, "commit "+c)
	}
	if when != "" {
		parts = append(parts, when)
	}
	parts = append(parts, goVersion, fmt.Sprintf("%s/%s", runtime.GOOS, runtime.GOARCH), fmt.Sprintf("plan format %d", plans.Version))
	return out + " (" + strings.Join(parts, ", ") + ")"
}
