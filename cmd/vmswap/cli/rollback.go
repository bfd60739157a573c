package cli

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"
	"github.com/vmswap/vmswap/plans/runner"
)

// NewCmdRollback builds `vmswap rollback PLAN`.
func NewCmdRollback(f *Factory, runF func(*ApplyOptions) error) *cobra.Command {
	opts := &ApplyOptions{IO: f.IO, Getenv: f.Getenv}
	cmd := &cobra.Command{
		Use:   "rollback PLAN",
		Short: "Switch traffic back to the old server after a swap, or undo a stopped run",
		Long: `After a swap succeeded, while the old server is kept powered off (retire: power_off,
keep_for), rollback powers it on, checks it with the plan's HTTP checks, moves traffic back
to it, and retires the new server as the plan retires servers. For a run that stopped
part-way, it undoes what that run did and deletes what it created. It always works from
the plan the run recorded in its journal, even if the plan file changed since.

It moves production traffic, so it says what it will do and asks first; --yes skips the
question, and without a terminal (CI) --yes is required.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.PlanFile = args[0]
			if runF != nil {
				return runF(opts)
			}
			return rollbackRun(cmd.Context(), opts)
		},
	}
	addRunFlags(cmd, opts)
	cmd.Flags().BoolVarP(&opts.Yes, "yes", "y", false, "go ahead without asking (needed without a terminal, as in CI)")
	return cmd
}

func rollbackRun(ctx context.Context, opts *ApplyOptions) error {
	if ctx == nil {
		ctx = context.Background()
	}
	pr, err := newPrinter(opts.IO, opts.Output)
	if err != nil {
		return err
	}
	sess, drivers, err := openSession(opts, pr, runner.CmdRollback)
	if err != nil {
		return pr.fail(err)
	}
	if sess.Lock == nil {
		pr.emit(runner.Event{Event: "progress", Message: sess.Decision.Why})
		return nil
	}
	defer sess.Close()
	defer keepDurations(opts.Getenv, sess.Doc.Plan, drivers)
	if !opts.Yes {
		fmt.Fprintf(opts.IO.ErrOut, "rollback of run %s (%s) will:\n", sess.Journal.RunID, sess.Journal.Status)
		for _, l := range runner.RevertPlan(sess.Journal, sess.Doc) {
			fmt.Fprintf(opts.IO.ErrOut, "  - %s\n", l)
		}
	}
	if err := confirm(opts.IO, opts.Yes, "nothing was changed: rollback asks before it moves traffic"); err != nil {
		return pr.fail(err)
	}
	stop := context.AfterFunc(ctx, func() {
		pr.emit(runner.Event{Event: "warning", Message: "interrupt: the rollback runs to its end, since stopping half-way would leave traffic split (press Ctrl-C again to quit at once)"})
	})
	defer stop()
	r := &runner.Runner{Doc: sess.Doc, Drivers: drivers, Journal: sess.Journal, Emit: pr.emit, Clock: opts.Clock, Poll: opts.Poll, PlanFile: opts.PlanFile}
	res := r.Revert(context.WithoutCancel(ctx))
	if res.ExitCode == runner.ExitBadInput {
		// Refused before anything changed: no table of what did not happen.
		return pr.fail(exitf(runner.ExitBadInput, "%s", res.Next))
	}
	pr.summary(res)
	if res.ExitCode != 0 {
		return &ExitError{Code: res.ExitCode, Err: errors.New("")}
	}
	if len(res.Swaps) == 0 {
		fmt.Fprintln(opts.IO.ErrOut, "nothing to roll back")
	}
	return nil
}
