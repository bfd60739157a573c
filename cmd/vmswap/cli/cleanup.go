package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/vmswap/vmswap/plans"
	"github.com/vmswap/vmswap/plans/registry"
	"github.com/vmswap/vmswap/plans/runner"
)

// CleanupOptions are the inputs of `vmswap cleanup`.
type CleanupOptions struct {
	IO       *IOStreams
	Getenv   func(string) string
	PlanFile string
	Yes      bool
	// Expired deletes retired sources whose keep window ended instead.
	Expired bool
}

// NewCmdCleanup builds `vmswap cleanup PLAN`.
func NewCmdCleanup(f *Factory, runF func(*CleanupOptions) error) *cobra.Command {
	opts := &CleanupOptions{IO: f.IO, Getenv: f.Getenv}
	cmd := &cobra.Command{
		Use:   "cleanup PLAN",
		Short: "Find and delete servers and snapshots a plan's runs left behind",
		Long: `Cleanup finds every server carrying the plan's tag (vmswap:<plan id>) and every snapshot
named after the plan that nothing uses (a succeeded swap's new server is in use, and so is
its snapshot when the plan keeps it), lists them, and deletes them after confirmation.
Without a terminal it never asks: pass --yes.

With --expired it deletes instead the old servers the plan's last run retired and kept
powered off (retire: {action: power_off, keep_for: ...}) whose keep window has ended — a
powered-off server is billed until it is deleted. Run it nightly.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.PlanFile = args[0]
			if runF != nil {
				return runF(opts)
			}
			return cleanupRun(cmd.Context(), opts)
		},
	}
	cmd.Flags().BoolVarP(&opts.Yes, "yes", "y", false, "delete without asking")
	cmd.Flags().BoolVar(&opts.Expired, "expired", false, "delete the retired old servers whose keep window has ended")
	return cmd
}

func cleanupRun(ctx context.Context, o *CleanupOptions) error {
	if ctx == nil {
		ctx = context.Background()
	}
	sess, err := runner.OpenSessionWith(o.PlanFile, runner.CmdCleanup, runner.SessionOptions{NewRunID: newRunID, Getenv: o.Getenv,
		Note: func(m string) { fmt.Fprintf(o.IO.ErrOut, "warning: %s\n", m) }})
	if err != nil {
		var pe plans.Errors
		if errors.As(err, &pe) {
			return planErrors(err)
		}
		return exitf(runner.ExitBadInput, "%v", err)
	}
	if err := sess.Decision.Refusal(); err != nil {
		return exitf(runner.ExitBadInput, "%v", err)
	}
	defer sess.Close()
	doc, j := sess.Doc, sess.Journal
	drivers, err := registry.Build(doc.Plan, registry.BuildOptions{Getenv: o.Getenv})
	if err != nil {
		return exitf(runner.ExitBadInput, "%v", err)
	}
	var orphans []runner.Orphan
	if o.Expired {
		orphans, err = runner.FindExpired(ctx, doc, j, drivers, time.Now())
	} else {
		orphans, err = runner.FindOrphans(ctx, doc, j, drivers)
	}
	if err != nil {
		return exitf(runner.ExitAttention, "%v", err)
	}
	if len(orphans) == 0 {
		fmt.Fprintln(o.IO.Out, "nothing to clean up")
		return nil
	}
	fmt.Fprintf(o.IO.Out, "found %d resource(s) left by %s:\n", len(orphans), o.PlanFile)
	for _, or := range orphans {
		fmt.Fprintf(o.IO.Out, "  %s\n", or)
	}
	if !o.Yes {
		if !o.IO.IsTerminal {
			return exitf(runner.ExitBadInput, "not deleting without confirmation: run `vmswap cleanup --yes %s`", o.PlanFile)
		}
		fmt.Fprintf(o.IO.ErrOut, "delete them? [y/N] ")
		line, _ := bufio.NewReader(o.IO.In).ReadString('\n')
		if a := strings.ToLower(strings.TrimSpace(line)); a != "y" && a != "yes" {
			return exitf(runner.ExitBadInput, "nothing deleted")
		}
	}
	if errs := runner.DeleteOrphans(ctx, orphans, drivers); len(errs) > 0 {
		return &ExitError{Code: runner.ExitAttention, Err: fmt.Errorf("%w\nrun `vmswap cleanup --yes %s` again to retry", errors.Join(errs...), o.PlanFile)}
	}
	fmt.Fprintf(o.IO.Out, "deleted %d resource(s)\n", len(orphans))
	return nil
}
