package cli

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/vmswap/vmswap/plans"
)

// NewCmdRollback builds `vmswap rollback PLAN`.
func NewCmdRollback(f *Factory, runF func(*ApplyOptions) error) *cobra.Command {
	opts := &ApplyOptions{IO: f.IO, Getenv: f.Getenv, Signals: f.Signals}
	cmd := &cobra.Command{
		Use:   "rollback PLAN",
		Short: "Switch traffic back to the old server after a swap, or undo a stopped run",
		Long: `After a swap succeeded, while the old server is kept powered off (retire: power_off,
keep_for), rollback powers it on, checks it with the plan's HTTP checks, moves traffic back
to it, and retires the new server as the plan retires servers. For a run that stopped
part-way, it undoes what that run did and deletes what it created.`,
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
	doc, j, lock, drivers, err := loadForApply(opts, pr, "rollback "+opts.PlanFile)
	if err != nil {
		return err
	}
	defer lock.Release()
	if j == nil {
		return exitf(plans.ExitBadInput, "%s has not been applied (no journal): nothing to roll back", opts.PlanFile)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if opts.Signals != nil {
		go func() {
			select {
			case <-opts.Signals:
				pr.emit(plans.Event{Event: "warning", Message: "interrupt: stopping at the next safe point"})
				cancel()
			case <-ctx.Done():
			}
		}()
	}
	r := &plans.Runner{Doc: doc, Drivers: drivers, Journal: j, Emit: pr.emit, Poll: opts.Poll, PlanFile: opts.PlanFile}
	res := r.Revert(ctx)
	pr.summary(res)
	if res.ExitCode != 0 {
		return &ExitError{Code: res.ExitCode, Err: errors.New("")}
	}
	if len(res.Swaps) == 0 {
		fmt.Fprintln(opts.IO.ErrOut, "nothing to roll back")
	}
	return nil
}
