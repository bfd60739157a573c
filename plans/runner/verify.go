package runner

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-multierror"
	"github.com/vmswap/vmswap/plans"
	"github.com/vmswap/vmswap/verify"
)

// This file: verify: the new server from the inside (SSH) and the outside (HTTP with the public Host and SNI).

func verifyStep(ctx context.Context, s *swapRun) error {
	v := s.sw.Verify
	var errs *multierror.Error
	s.st.Checks = nil
	record := func(name string, problems []error, ok string) {
		if len(problems) == 0 {
			s.st.Checks = append(s.st.Checks, CheckResult{Name: name, OK: true, Detail: ok})
			s.r.emit(Event{Event: "check", Swap: s.name(), Status: "ok", Message: name + ": " + ok})
			return
		}
		for _, p := range problems {
			s.st.Checks = append(s.st.Checks, CheckResult{Name: name, OK: false, Detail: p.Error()})
			s.r.emit(Event{Event: "check", Swap: s.name(), Status: "failed", Message: name + ": " + p.Error()})
			errs = multierror.Append(errs, fmt.Errorf("%s: %w", name, p))
		}
	}
	if k := v.SSH; k != nil {
		host := s.st.NewIP
		if k.Address != "" {
			host = k.Address
		}
		facts, err := sshFacts(ctx, host, s.sshConfig(k, s.st.NewID))
		if err != nil {
			record("ssh", []error{err}, "")
		} else {
			check := func(name string, t *verify.Threshold, got float64, show string) {
				if t == nil {
					return
				}
				if t.Holds(got) {
					record(name, nil, fmt.Sprintf("%s (want %s)", show, t.Text))
				} else {
					record(name, []error{fmt.Errorf("%s, want %s", show, t.Text)}, "")
				}
			}
			s.checkHostname(facts.Hostname, record)
			check("memory", v.Memory, facts.MemoryBytes, verify.HumanBytes(facts.MemoryBytes))
			check("disk", v.Disk, facts.DiskBytes, verify.HumanBytes(facts.DiskBytes))
			check("cpus", v.CPUs, facts.CPUs, strconv.FormatFloat(facts.CPUs, 'f', -1, 64))
		}
	}
	newAddr := s.pinAddr(s.st.NewIP)
	if len(v.HTTP) > 0 || len(v.Compare) > 0 {
		client, err := verify.Pinned(newAddr, v.CAFile, 10*time.Second)
		if err != nil {
			return err
		}
		for _, h := range v.HTTP {
			record("http "+h.URL, h.Check(ctx, client), fmt.Sprintf("answered as expected via %s", newAddr))
		}
		if len(v.Compare) > 0 {
			base := v.CompareBase
			if base == "" {
				base = s.serviceURL().String()
			}
			oldClient, err := verify.Pinned(s.pinAddr(s.st.SourceIP), v.CAFile, 10*time.Second)
			if err != nil {
				return err
			}
			record("compare", verify.Compare(ctx, oldClient, client, base, v.Compare), fmt.Sprintf("%d paths answer the same on old and new", len(v.Compare)))
		}
	}
	for _, c := range v.Commands {
		tail, err := s.runCommand(ctx, c)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		ok := "passed through the pinning proxy"
		if len(tail) > 0 {
			ok += ": " + tail[len(tail)-1]
		}
		var problems []error
		if err != nil {
			problems = []error{fmt.Errorf("%v; last output: %s", err, strings.Join(tail, " | "))}
		}
		record("command "+c.Run, problems, ok)
	}
	if err := s.save(); err != nil {
		return err
	}
	if errs.ErrorOrNil() != nil {
		errs.ErrorFormat = listFormat
		return errors.Join(ErrVerify, fmt.Errorf("%d check(s) failed on %s:\n%s", len(errs.Errors), s.st.NewName, errs.Error()))
	}
	return nil
}

func (s *swapRun) addrOfSource() string {
	if s.sw.Verify.ConnectAddress != "" {
		// Behind an override both servers are reached the same way; the
		// source is what the override reached before cutover.
		return s.sw.Verify.ConnectAddress
	}
	return net.JoinHostPort(s.st.SourceIP, portOf(s.serviceURL()))
}

// sshConfig is how the swap's SSH checks connect to the server with the
// given ID. Host keys go to the plan's known_hosts_file or, by default, to
// vmswap's own file beside the plan's journal, never to the user's
// ~/.ssh/known_hosts; in vmswap's own file a key is recorded under the
// server's ID, since cloud addresses are reused and IDs are not.
func (s *swapRun) sshConfig(k *plans.SSH, serverID string) verify.SSHConfig {
	cfg := verify.SSHConfig{User: k.User, KeyFile: k.Key, Port: k.Port, KnownHosts: k.KnownHostsFile, HostKeyPolicy: k.KnownHosts}
	if cfg.KnownHosts == "" {
		cfg.KnownHosts = s.r.planFile() + ".known_hosts"
		cfg.HostKeyAlias = "vmswap-server-" + s.sw.Source.Provider + "-" + serverID
	}
	return cfg
}

func sshFacts(ctx context.Context, host string, cfg verify.SSHConfig) (*verify.Facts, error) {
	c, err := verify.DialSSH(ctx, host, cfg)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.Facts(ctx)
}

// checkHostname reports the new server's OS hostname beside the one it was
// launched as. An image that carried the source's hostname makes two
// machines answer to one name in logs and monitoring: a warning, or a
// failed check if the plan says hostname_check: fail.
func (s *swapRun) checkHostname(got string, record func(string, []error, string)) {
	want := s.st.NewName
	switch {
	case got == "":
		return
	case got == want:
		record("hostname", nil, fmt.Sprintf("%s (expected %s)", got, want))
	case got == s.st.SourceName:
		msg := fmt.Sprintf("hostname %s is the source's (expected %s): the image carried it; set it on first boot (cloud-init's preserve_hostname: false)", got, want)
		if s.sw.Verify.HostnameCheck == "fail" {
			record("hostname", []error{errors.New(msg)}, "")
			return
		}
		s.r.emit(Event{Event: "warning", Swap: s.name(), Message: msg})
		s.st.Warnings = append(s.st.Warnings, msg)
	default:
		record("hostname", nil, fmt.Sprintf("%s (expected %s; not the source's either)", got, want))
	}
}

// runCommand runs one of the user's own checks on this machine, with
// HTTP(S)_PROXY pointing at a proxy that sends the site's hostnames to the
// new server. Its environment is the user's, without the provider tokens
// vmswap reads (a test suite has no use for them), plus VMSWAP_NEW_ADDRESS,
// VMSWAP_OLD_ADDRESS and VMSWAP_HOSTS. It returns the last lines of its
// output.
func (s *swapRun) runCommand(ctx context.Context, c plans.Command) ([]string, error) {
	addr := s.st.NewIP
	if ca := s.sw.Verify.ConnectAddress; ca != "" {
		if h, _, err := net.SplitHostPort(ca); err == nil {
			addr = h
		}
	}
	hosts := s.sw.PublicHosts()
	px := &verify.PinProxy{Hosts: hosts, Addr: addr}
	purl, err := px.Start()
	if err != nil {
		return nil, err
	}
	defer px.Close()
	cctx, cancel := context.WithTimeout(ctx, orDur(c.Timeout, 5*time.Minute))
	defer cancel()
	shell, flag := "sh", "-c"
	if runtime.GOOS == "windows" {
		shell, flag = "cmd", "/C"
	}
	cmd := exec.CommandContext(cctx, shell, flag, c.Run)
	cmd.Dir = filepath.Dir(s.r.planFile())
	cmd.WaitDelay = 5 * time.Second
	environ := os.Environ
	if s.r.Environ != nil {
		environ = s.r.Environ
	}
	env := slices.DeleteFunc(environ(), func(kv string) bool {
		k, _, _ := strings.Cut(kv, "=")
		return slices.Contains(s.secretVars(), k) || strings.EqualFold(k, "http_proxy") || strings.EqualFold(k, "https_proxy") || strings.EqualFold(k, "no_proxy")
	})
	cmd.Env = append(append(env, verify.ProxyEnv(purl)...), "VMSWAP_NEW_ADDRESS="+s.st.NewIP, "VMSWAP_OLD_ADDRESS="+s.st.SourceIP, "VMSWAP_HOSTS="+strings.Join(hosts, " "))
	var out verify.TailBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	s.progress("command: %s (through %s, sending %s to %s)", c.Run, purl, strings.Join(hosts, ", "), addr)
	err = cmd.Run()
	t := tail(out.String(), 10)
	for _, l := range t {
		s.r.emit(Event{Event: "hook", Swap: s.name(), Step: "verify", Message: "  " + l})
	}
	if cctx.Err() == context.DeadlineExceeded {
		return t, fmt.Errorf("no result in %s", orDur(c.Timeout, 5*time.Minute))
	}
	return t, err
}

// secretVars are the environment variables vmswap reads credentials from.
func (s *swapRun) secretVars() []string {
	vars := []string{"DIGITALOCEAN_TOKEN", "DIGITALOCEAN_ACCESS_TOKEN", "CLOUDFLARE_API_TOKEN", "HCLOUD_TOKEN", "RFC2136_TSIG_SECRET", "SPACES_SECRET_ACCESS_KEY"}
	for _, p := range s.r.Doc.Plan.Providers {
		if p.TokenEnv != "" {
			vars = append(vars, p.TokenEnv)
		}
	}
	return vars
}
