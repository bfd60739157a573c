package runner_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"

	"github.com/vmswap/vmswap/plans"
	"github.com/vmswap/vmswap/plans/registry"
	"github.com/vmswap/vmswap/plans/runner"
)

// TestPlansMatchSchema: the examples, and a plan as `vmswap plan` writes
// it (with what it observed), validate against `vmswap schema`, so an
// editor using the schema accepts what vmswap accepts.
func TestPlansMatchSchema(t *testing.T) {
	b, _ := json.Marshal(plans.Schema())
	var doc any
	json.Unmarshal(b, &doc)
	c := jsonschema.NewCompiler()
	if err := c.AddResource("plan.json", doc); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile("plan.json")
	if err != nil {
		t.Fatalf("the schema does not compile: %v", err)
	}
	check := func(name string, raw []byte) {
		t.Helper()
		var v any
		if err := yaml.Unmarshal(raw, &v); err != nil {
			t.Fatal(err)
		}
		// YAML to JSON values, as an editor sees them.
		j, _ := json.Marshal(v)
		var jv any
		json.Unmarshal(j, &jv)
		if err := sch.Validate(jv); err != nil {
			t.Errorf("%s does not validate against the schema: %v", name, err)
		}
	}
	files, _ := filepath.Glob("../../examples/*.yaml")
	for _, f := range files {
		raw, _ := os.ReadFile(f)
		check(f, raw)
	}
	w := newWorld(t)
	sw := w.swap("loadbalancer")
	d := w.plan(sw)
	if err := runner.ObserveWorld(context.Background(), d.Plan, registry.BuildOptions{Getenv: w.getenv}); err != nil {
		t.Fatal(err)
	}
	raw, err := yaml.Marshal(d.Plan)
	if err != nil {
		t.Fatal(err)
	}
	check("a plan with observations", raw)
	// And the schema rejects what the parser rejects.
	var bad any
	json.Unmarshal([]byte(`{"version": 1, "providers": {}, "swaps": [{"source": {"provider": "x", "server": "y"}, "target": {"size": "s"}, "cutover": {}, "retier": {}}]}`), &bad)
	if sch.Validate(bad) == nil {
		t.Error("the schema accepts an unknown field")
	}
}
