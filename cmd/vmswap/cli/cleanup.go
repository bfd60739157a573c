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
	// Provider, with Expired, searches a whole account instead of a plan.
	Provider string
	Endpoint string
}

// NewCmdCleanup builds `vmswap cleanup PLAN`.
func NewCmdCleanup(f *Factory, runF func(*CleanupOptions) error) *cobra.Command {
	opts := &CleanupOptions{IO: f.IO, Getenv: f.Getenv}
	cmd := &cobra.Command{
		Use:   "cleanup PLAN | cleanup --expired --provider TYPE",
		Short: "Find and delete servers and snapshots a plan's runs left behind",
		Long: `Cleanup finds every server carrying the plan's tag (vmswap:<plan id>) and every snapshot
named after the plan that nothing uses (a succeeded swap's new server is in use, and so is
its snapshot when the plan keeps it), lists them, and deletes them after confirmation.
Without a terminal it never asks: pass --yes.

With --expired it deletes instead the old servers the plan's last run retired and kept
powered off (retire: {action: power_off, keep_for: ...}) whose keep window has ended — a
powered-off server is billed until it is deleted. Run it nightly. With --provider TYPE
instead of a plan, it looks across the whole account (credentials from the environment)
for the servers any vmswap run retired with a keep window, by their vmswap-keep-until tag.`,
		Args: cobra.RangeArgs(0, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if (len(args) == 1) == (opts.Provider != "") || opts.Provider != "" && !opts.Expired {
				return exitf(runner.ExitBadInput, "give a plan file, or --expired --provider TYPE to search an account")
			}
			if len(args) == 1 {
				opts.PlanFile = args[0]
			}
			if runF != nil {
				return runF(opts)
			}
			return cleanupRun(cmd.Context(), opts)
		},
	}
	cmd.Flags().BoolVarP(&opts.Yes, "yes", "y", false, "delete without asking")
	cmd.Flags().BoolVar(&opts.Expired, "expired", false, "delete the retired old servers whose keep window has ended")
	cmd.Flags().StringVar(&opts.Provider, "provider", "", "with --expired: search the whole account of this provider type (digitalocean, aws, hetzner) instead of a plan")
	cmd.Flags().StringVar(&opts.Endpoint, "endpoint", "", "with --provider: API base URL override (the lab)")
	return cmd
}

func cleanupRun(ctx context.Context, o *CleanupOptions) error {
	if ctx == nil {
		ctx = context.Background()
	}
	if o.Provider != "" {
		return cleanupAccount(ctx, o)
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
	if len(orphans) == 0 && !o.Expired && j != nil && j.Status == runner.StatusNeedsAttention {
		// What the run made is not an orphan while the run may still need
		// it: say so, rather than that there is nothing.
		fmt.Fprintf(o.IO.Out, "nothing to clean up: run %s of %s needs attention, and what it made (or serves from) stays until it is finished; see `vmswap status %s`\n", j.RunID, o.PlanFile, o.PlanFile)
		return nil
	}
	if err := o.deleteListed(ctx, orphans, drivers, o.PlanFile); err != nil || !o.Expired || j == nil {
		return err
	}
	var ids []string
	for _, or := range orphans {
		ids = append(ids, or.ID)
	}
	if err := j.MarkDeleted(ids); err != nil {
		return exitf(runner.ExitAttention, "deleted, but the journal could not record it: %v", err)
	}
	return nil
}

// deleteListed shows what was found, asks (or takes --yes), deletes, and
// says what it could not.
func (o *CleanupOptions) deleteListed(ctx context.Context, orphans []runner.Orphan, drivers map[string]*registry.Drivers, where string) error {
	again := "vmswap cleanup --yes " + o.PlanFile
	if o.Provider != "" {
		again = "vmswap cleanup --expired --yes --provider " + o.Provider
		if o.Endpoint != "" {
			again += " --endpoint " + o.Endpoint
		}
	} else if o.Expired {
		again = "vmswap cleanup --expired --yes " + o.PlanFile
	}
	if len(orphans) == 0 {
		fmt.Fprintln(o.IO.Out, "nothing to clean up")
		return nil
	}
	fmt.Fprintf(o.IO.Out, "found %d resource(s) left by %s:\n", len(orphans), where)
	for _, or := range orphans {
		fmt.Fprintf(o.IO.Out, "  %s\n", or)
	}
	if !o.Yes {
		if !o.IO.IsTerminal {
			return exitf(runner.ExitBadInput, "not deleting without confirmation: run `%s`", again)
		}
		fmt.Fprintf(o.IO.ErrOut, "delete them? [y/N] ")
		line, _ := bufio.NewReader(o.IO.In).ReadString('\n')
		if a := strings.ToLower(strings.TrimSpace(line)); a != "y" && a != "yes" {
			return exitf(runner.ExitBadInput, "nothing deleted")
		}
	}
	if errs := runner.DeleteOrphans(ctx, orphans, drivers); len(errs) > 0 {
		return &ExitError{Code: runner.ExitAttention, Err: fmt.Errorf("%w\nrun `%s` again to retry", errors.Join(errs...), again)}
	}
	fmt.Fprintf(o.IO.Out, "deleted %d resource(s)\n", len(orphans))
	return nil
}

// cleanupAccount is cleanup --expired --provider: every retired server in
// the account whose keep window ended, whatever plan retired it.
func cleanupAccount(ctx context.Context, o *CleanupOptions) error {
	p := &plans.Plan{Version: plans.Version, Providers: map[string]plans.Provider{o.Provider: {Type: o.Provider, Endpoint: o.Endpoint}}}
	drivers, err := registry.Build(p, registry.BuildOptions{Getenv: o.Getenv})
	if err != nil {
		return exitf(runner.ExitBadInput, "%v", err)
	}
	if drivers[o.Provider] == nil || drivers[o.Provider].Compute == nil {
		return exitf(runner.ExitBadInput, "--provider %s: not a compute provider", o.Provider)
	}
	expired, err := runner.FindExpiredIn(ctx, o.Provider, drivers[o.Provider].Compute, time.Now())
	if err != nil {
		return exitf(runner.ExitAttention, "%v", err)
	}
	return o.deleteListed(ctx, expired, drivers, "the "+o.Provider+" account")
}
