package cli

import (
	"os"

	"github.com/vmswap/vmswap/plans"
	"github.com/vmswap/vmswap/plans/runner"
	"github.com/vmswap/vmswap/report"
)

// writeReport writes the HTML report of a run.
func writeReport(path string, doc *plans.Document, j *runner.Journal, res *runner.Result, cmp ...report.Comparison) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := report.Write(f, doc.Plan, j, res, cmp...); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
