package plans_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"

	"github.com/vmswap/vmswap/plans"
)

// TestSchemaAndValidateAgree: every example plan, and mutations of one,
// through `vmswap validate` (plans.Check) and through the JSON Schema an
// editor uses: both accept or both refuse. Rules that need the whole plan
// (which provider blocks exist, what a driver can do) only validate can
// check; the rest is one truth, the fields' `check` tags.
func TestSchemaAndValidateAgree(t *testing.T) {
	b, _ := json.Marshal(plans.Schema())
	var doc any
	json.Unmarshal(b, &doc)
	c := jsonschema.NewCompiler()
	if err := c.AddResource("plan.json", doc); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile("plan.json")
	if err != nil {
		t.Fatal(err)
	}
	schemaOK := func(raw []byte) (bool, error) {
		var v any
		if err := yaml.Unmarshal(raw, &v); err != nil {
			return false, err
		}
		j, _ := json.Marshal(v)
		var jv any
		json.Unmarshal(j, &jv)
		return sch.Validate(jv) == nil, nil
	}
	base, err := os.ReadFile("../examples/digitalocean-lb.yaml")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		desc, old, new string
		ok             bool
	}{
		{desc: "the example as it is", ok: true},
		{desc: "observe 0", old: "observe: 2m", new: "observe: 0", ok: true},
		{desc: "observe without a unit", old: "observe: 2m", new: "observe: 90", ok: false},
		{desc: "memory without a unit", old: `memory: ">= 7.5GiB"`, new: `memory: ">= 8"`, ok: false},
		{desc: "memory as a bare number", old: `memory: ">= 7.5GiB"`, new: `memory: 8`, ok: false},
		{desc: "memory in GB", old: `memory: ">= 7.5GiB"`, new: `memory: "8GB"`, ok: true},
		{desc: "cpus with a unit", old: `cpus: ">= 4"`, new: `cpus: ">= 4GiB"`, ok: false},
		{desc: "disk without a unit", old: `disk: ">= 150GB"`, new: `disk: ">= 150"`, ok: false},
		{desc: "unknown retire action", old: "action: power_off", new: "action: shred", ok: false},
		{desc: "retire by deletion", old: "action: power_off, keep_for: 24h,", new: "action: delete,", ok: true},
		{desc: "probe rate 0", old: "rate: 50", new: "rate: 0", ok: false},
		{desc: "probe rate too high", old: "rate: 50", new: "rate: 20001", ok: false},
		{desc: "probe rate the highest", old: "rate: 50", new: "rate: 20000", ok: true},
		{desc: "probe rate fractional", old: "rate: 50", new: "rate: 2.5", ok: false},
		{desc: "ssh port out of range", old: "user: root,", new: "user: root, port: 70000,", ok: false},
		{desc: "ssh port", old: "user: root,", new: "user: root, port: 2222,", ok: true},
		{desc: "unknown host key policy", old: "known_hosts: accept-new", new: "known_hosts: trust-all", ok: false},
		{desc: "HTTP status out of range", old: "status: 200", new: "status: 42", ok: false},
		{desc: "two cutovers", old: "    probe:", new: "      reserved_ip: {provider: do, ip: 192.0.2.1}\n    probe:", ok: false},
		{desc: "no cutover", old: "      loadbalancer: {provider: do, id: 4de7ac8b-495b-4884-9a69-1050c6793cd6, identify_header: X-Served-By, drain: 15s}\n", new: "      {}\n", ok: false},
		{desc: "no swaps", old: "swaps:\n", new: "swaps: []\nx:\n", ok: false},
		{desc: "no providers", old: "  do: {type: digitalocean}\n", new: "  {}\n", ok: false},
		{desc: "unknown provider type", old: "type: digitalocean", new: "type: linode", ok: false},
		{desc: "bad plan id", old: "version: 1\n", new: "version: 1\nid: Not_An_ID\n", ok: false},
		{desc: "a plan id", old: "version: 1\n", new: "version: 1\nid: web-1-up\n", ok: true},
		{desc: "version 2", old: "version: 1", new: "version: 2", ok: false},
		{desc: "unknown field", old: "observe: 2m", new: "observe: 2m\n    obsreve: 2m", ok: false},
		{desc: "AAAA record type", old: "    cutover:\n      loadbalancer: {provider: do, id: 4de7ac8b-495b-4884-9a69-1050c6793cd6, identify_header: X-Served-By, drain: 15s}", new: "    cutover:\n      dns: {provider: do, record: www.example.com, type: AAAA}", ok: true},
		{desc: "MX record type", old: "    cutover:\n      loadbalancer: {provider: do, id: 4de7ac8b-495b-4884-9a69-1050c6793cd6, identify_header: X-Served-By, drain: 15s}", new: "    cutover:\n      dns: {provider: do, record: www.example.com, type: MX}", ok: false},
		{desc: "error budget as a ratio", old: "error_budget: 0", new: `error_budget: "0.1%"`, ok: true},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			raw := string(base)
			if tt.old != "" {
				if !strings.Contains(raw, tt.old) {
					t.Fatalf("the example lacks %q", tt.old)
				}
				raw = strings.Replace(raw, tt.old, tt.new, 1)
			}
			_, verr := plans.Check("p.yaml", []byte(raw))
			sok, err := schemaOK([]byte(raw))
			if err != nil {
				t.Fatal(err)
			}
			if (verr == nil) != tt.ok || sok != tt.ok {
				t.Fatalf("validate: %v; schema accepts: %v; want accepted: %v\n%s", verr, sok, tt.ok, raw)
			}
		})
	}
	files, _ := filepath.Glob("../examples/*.yaml")
	for _, f := range files {
		raw, _ := os.ReadFile(f)
		_, verr := plans.Check(f, raw)
		if ok, _ := schemaOK(raw); verr != nil || !ok {
			t.Errorf("%s: validate %v, schema accepts %v", f, verr, ok)
		}
	}
}
