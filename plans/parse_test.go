package plans

import (
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestExamplesValidate(t *testing.T) {
	files, err := filepath.Glob("../examples/*.yaml")
	if err != nil || len(files) < 3 {
		t.Fatalf("examples: %v %v", files, err)
	}
	for _, f := range files {
		doc, err := Load(f)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if len(doc.Plan.Swaps) == 0 || doc.Plan.Swaps[0].Cutover.Kind() == "" {
			t.Errorf("%s: parsed without a swap or cutover: %+v", f, doc.Plan)
		}
	}
	doc, _ := Load("../examples/digitalocean-lb.yaml")
	sw := doc.Plan.Swaps[0]
	if sw.Observe.D() != 2*time.Minute || sw.Verify.Memory.Value != 7.5*(1<<30) || sw.Verify.Memory.Op != ">=" || sw.Retire.KeepFor.D() != 24*time.Hour {
		t.Fatalf("decoded wrong: observe %v memory %+v keep %v", sw.Observe.D(), sw.Verify.Memory, sw.Retire.KeepFor.D())
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		desc string
		plan string
		want []string
	}{
		{
			desc: "every kind of mistake at once, each at its place",
			plan: `version: 1
providers:
  do: {type: digitalocean}
  aws: {type: amazon}
swaps:
  - source: {provider: do, server: web-1}
    target: {size: S_4VCPU}
    verify:
      memory: "about 8 gigs"
      ssh: {user: root}
    cutover:
      loadbalancer: {provider: dx, id: abc}
    observe: 2 minutes
    retier: {action: delete}
`,
			want: []string{
				"p.yaml:4:15: unknown provider type \"amazon\" (known: aws, cloudflare, digitalocean, haproxy, hetzner, nginx, rfc2136)",
				"p.yaml:7:20: size \"S_4VCPU\" is not a DigitalOcean size slug like s-4vcpu-8gb",
				"p.yaml:9:15: threshold \"about 8 gigs\": want an operator and a number, like \">= 7.5GiB\" or \">= 4\"",
				"p.yaml:12:32: unknown provider \"dx\" (did you mean \"do\"?)",
				"p.yaml:13:14: bad duration \"2 minutes\": write a number and a unit, like 90s, 2m or 1h30m",
				"p.yaml:14:5: unknown field \"retier\" in swaps[0] (did you mean \"retire\"?)",
			},
		},
		{
			desc: "a ready_timeout nothing can be waited for in, a nameserver port out of range",
			plan: "version: 1\nproviders: {do: {type: digitalocean, nameserver: '127.0.0.1:99999'}}\nswaps:\n  - source: {provider: do, server: a}\n    target: {size: s-1vcpu-1gb}\n    cutover: {reserved_ip: {provider: do, ip: 203.0.113.1}}\n    ready_timeout: 1ms\n",
			want: []string{
				"p.yaml:2:50: nameserver \"127.0.0.1:99999\": want host:port with a port from 1 to 65535, like ns1.digitalocean.com:53",
				"p.yaml:7:20: ready_timeout 1ms is too short to wait for anything: at least 1s (default 15m)",
			},
		},
		{
			desc: "unsupported version",
			plan: "version: 2\nproviders: {do: {type: digitalocean}}\nswaps: [{source: {provider: do, server: a}, target: {size: s-1vcpu-1gb}, cutover: {reserved_ip: {provider: do, ip: 203.0.113.1}}}]\n",
			want: []string{"p.yaml:1:10: plan format version 2 is not supported by this vmswap (it reads version 1): use the vmswap release that wrote it, or write a new plan with `vmswap plan`"},
		},
		{
			desc: "missing version and two cutovers",
			plan: "providers: {do: {type: digitalocean}}\nswaps:\n  - source: {provider: do, server: a}\n    target: {size: s-1vcpu-1gb}\n    cutover:\n      reserved_ip: {provider: do, ip: 203.0.113.1}\n      dns: {provider: do, record: www.example.com}\n    probe: {url: 'http://www.example.com/'}\n",
			want: []string{
				"p.yaml:1:1: missing version: the first line of a plan is `version: 1`",
				"p.yaml:5:5: cutover sets dns and reserved_ip: choose one of loadbalancer, dns, reserved_ip",
			},
		},
		{
			desc: "wrong kinds of values",
			plan: "version: one\nproviders: [do]\nswaps: {}\n",
			want: []string{
				"p.yaml:1:10: version: want a whole number, got \"one\"",
				"p.yaml:2:12: providers: want a mapping, got a list",
				"p.yaml:3:8: swaps: want a list, got a mapping",
			},
		},
		{
			desc: "YAML syntax",
			plan: "version: 1\nswaps: [\n",
			want: []string{"p.yaml:2:1: YAML syntax: did not find expected node content"},
		},
		{
			desc: "checks that need ssh, a DNS cutover without a probe",
			plan: "version: 1\nproviders: {do: {type: digitalocean}}\nswaps:\n  - source: {provider: do, server: a}\n    target: {size: s-1vcpu-1gb}\n    verify: {cpus: '>= 2'}\n    cutover: {dns: {provider: do, record: www.example.com}}\n",
			want: []string{
				"p.yaml:6:5: memory, disk and cpus are read over SSH: add verify.ssh",
				"p.yaml:7:15: a DNS cutover needs a probe url with the record's name, so that vmswap can watch traffic",
			},
		},
		{
			desc: "nginx: a relative directory, no address, shell in the command, no identify header, its settings on another type",
			plan: `version: 1
providers:
  do: {type: digitalocean, port: 80}
  web: {type: nginx, endpoint: etc/nginx/vmswap, command: "nginx; rm -rf /"}
  far: {type: nginx, endpoint: "ssh://proxy.internal/etc/nginx/vmswap", address: "10.0.0.2:80", ssh: {known_hosts: accept-new}}
swaps:
  - source: {provider: do, server: web-1}
    target: {size: s-2vcpu-4gb}
    cutover:
      loadbalancer: {provider: web, id: app}
`,
			want: []string{
				"p.yaml:3:3: command, address, port and ssh are settings of an nginx provider, not of digitalocean",
				"p.yaml:4:3: nginx address \"\": the host:port nginx listens on for the site, like 10.0.0.2:80",
				"p.yaml:4:32: nginx endpoint \"etc/nginx/vmswap\": the absolute directory of the upstream files vmswap owns (/etc/nginx/vmswap), or ssh://USER@HOST/DIR on a proxy host",
				"p.yaml:4:59: nginx command \"nginx; rm -rf /\": words only (no quotes or shell syntax), like nginx -c /etc/nginx/nginx.conf",
				"p.yaml:5:32: nginx endpoint \"ssh://proxy.internal/etc/nginx/vmswap\": ssh://USER@HOST[:PORT]/DIR, the proxy host and the directory of the upstream files",
				"p.yaml:5:97: known_hosts: accept-new needs known_hosts_file: vmswap never writes ~/.ssh/known_hosts",
				"p.yaml:10:7: nginx reports no member's health: set identify_header to a response header that names the server (X-Served-By), so vmswap proves requests through nginx reach the new one",
			},
		},
		{
			desc: "a token-taking API over plain http to another machine",
			plan: `version: 1
providers:
  do: {type: digitalocean, endpoint: "http://api.example.com/"}
  lab: {type: digitalocean, endpoint: "http://127.0.0.1:8080/"}
  cf: {type: cloudflare, endpoint: "http://localhost:9/client/v4"}
  aws: {type: aws, region: us-east-1, endpoint: "http://10.0.0.5:4566"}
swaps:
  - source: {provider: do, server: web-1}
    target: {size: s-2vcpu-4gb}
    cutover:
      reserved_ip: {provider: do, ip: 203.0.113.1}
`,
			want: []string{
				"p.yaml:3:38: endpoint \"http://api.example.com/\" is plain http to another machine: the API token would cross the network unencrypted; use https:// (plain http is for loopback, as the lab)",
			},
		},
		{
			desc: "an identify header that is no header name",
			plan: "version: 1\nproviders: {do: {type: digitalocean}}\nswaps:\n  - source: {provider: do, server: web-1}\n    target: {size: s-2vcpu-4gb}\n    cutover: {loadbalancer: {provider: do, id: x, identify_header: \"X-Served\\e]0;t\\aBy\"}}\n",
			want: []string{"p.yaml:6:68: identify_header \"X-Served\\x1b]0;t\\aBy\" is not an HTTP header name: a token of letters, digits and symbols such as - and _, with no space, colon or other separator, like X-Served-By"},
		},
		{
			desc: "passwords in URLs are refused and never shown",
			plan: `version: 1
providers:
  do: {type: digitalocean, endpoint: "https://me:tok3n@api.example.com/"}
swaps:
  - source: {provider: do, server: web-1}
    target: {size: s-2vcpu-4gb}
    verify:
      http: [{url: "https://admin:hunter2@www.example.com/health"}, {url: "u:pw6@www.example.com:8080"}, {url: "http://T0KEN@www.example.com/"}, {url: "http://u%3Apw4@www.example.com/"}]
    probe: {url: "http://u:s3cret@www.example.com/"}
    cutover:
      reserved_ip: {provider: do, ip: 203.0.113.1}
`,
			want: []string{
				"p.yaml:3:38: endpoint \"…@api.example.com/\": no user or password in the URL: it would be copied into the plan, the journal, the output and the report; credentials come from the environment (the provider's token_env; for S3 the AWS_* variables)",
				"p.yaml:8:20: url \"…@www.example.com/health\": no user or password in the URL: it would be copied into the plan, the journal, the output and the report; check a path that needs no login (a health endpoint)",
				"p.yaml:8:75: url \"…@www.example.com:8080\": want an http:// or https:// URL",
				"p.yaml:8:112: url \"…@www.example.com/\": no user or password in the URL: it would be copied into the plan, the journal, the output and the report; check a path that needs no login (a health endpoint)",
				"p.yaml:8:152: url \"…@www.example.com/\": no user or password in the URL: it would be copied into the plan, the journal, the output and the report; check a path that needs no login (a health endpoint)",
				"p.yaml:9:18: probe url \"…@www.example.com/\": no user or password in the URL: it would be copied into the plan, the journal, the output and the report; check a path that needs no login (a health endpoint)",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			_, err := Check("p.yaml", []byte(tt.plan))
			var es Errors
			if !errors.As(err, &es) {
				t.Fatalf("want Errors, got %v", err)
			}
			got := strings.Split(es.Error(), "\n")
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

func TestBudget(t *testing.T) {
	tests := []struct {
		desc          string
		text          string
		failed, total int64
		breached      bool
	}{
		{"zero count, none failed", "0", 0, 1000, false},
		{"zero count, one failed", "0", 1, 1000, true},
		{"ratio under", "1%", 9, 1000, false},
		{"ratio over", "1%", 11, 1000, true},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			doc, err := Parse("p.yaml", []byte("version: 1\nswaps:\n - probe: {url: 'http://x/', error_budget: '"+tt.text+"'}\n"))
			if err != nil {
				t.Fatal(err)
			}
			b := doc.Plan.Swaps[0].Probe.ErrorBudget
			if got := b.Breached(tt.failed, tt.total); got != tt.breached {
				t.Fatalf("Breached(%d, %d) with %s = %v", tt.failed, tt.total, tt.text, got)
			}
		})
	}
}

func TestSchema(t *testing.T) {
	b, err := json.Marshal(Schema())
	if err != nil {
		t.Fatal(err)
	}
	var s struct {
		Properties map[string]json.RawMessage
		Required   []string
	}
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"version", "providers", "swaps", "observed"} {
		if _, ok := s.Properties[k]; !ok {
			t.Errorf("schema lacks %q", k)
		}
	}
	for _, want := range []string{`"identify_header"`, `"error_budget"`, `"keep_for"`, `"additionalProperties":false`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("schema lacks %s", want)
		}
	}
}

// TestObservedMatchesSwaps: a plan whose swaps were edited by hand after
// it was observed is refused: a swap removed (its fleet member no longer
// swapped), or one server swapped twice, once by name and once by ID.
func TestObservedMatchesSwaps(t *testing.T) {
	head := "version: 1\nproviders: {do: {type: digitalocean}}\nfleet: {provider: do, tag: web}\nswaps:\n"
	sw := func(name string) string {
		return "  - {source: {provider: do, server: " + name + "}, target: {size: s-2vcpu-4gb}, cutover: {loadbalancer: {provider: do, id: lb1}}}\n"
	}
	obs := func(ids ...string) string {
		out := "observed:\n  at: 2026-12-02T00:00:00Z\n  swaps:\n"
		for _, id := range ids {
			out += "    - {source: {id: \"" + id + "\", name: web-" + id + ", size: s-1vcpu-1gb, status: running, public_ip: 10.0.0." + id + ", region: nyc3, memory_mb: 1024, vcpus: 1, disk_gb: 25}, target_size: {slug: s-2vcpu-4gb}}\n"
		}
		return out + "  fleet: [{id: \"1\", name: web-1}, {id: \"2\", name: web-2}]\n"
	}
	for _, tc := range []struct{ name, plan, want string }{
		{"a swap removed", head + sw("web-1") + obs("1", "2"), "the plan has 1 swaps but observed 2"},
		{"a fleet member not swapped", head + sw("web-1") + obs("1"), "web-2 (2) carries the tag web but no swap upgrades it"},
		{"one server twice", head + sw("web-1") + sw("\"1\"") + obs("1", "1"), "swaps[0] and swaps[1] upgrade the same server web-1 (1)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Check("p.yaml", []byte(tc.plan))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}

// TestLoadWhatIsNoFile: a path that is not a regular file is refused,
// saying what it is.
func TestLoadWhatIsNoFile(t *testing.T) {
	for path, want := range map[string]string{t.TempDir(): "(a directory)", "/dev/null": "(a character device)"} {
		if _, err := Load(path); err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("%s: %v, want %q", path, err, want)
		}
	}
}
