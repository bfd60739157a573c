package cli

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/crypto/ssh"

	"github.com/vmswap/vmswap/lab"
	"github.com/vmswap/vmswap/plans/runner"
)

// newCmdLabSeed builds `vmswap lab seed`: a server with a site, behind a
// load balancer, a DNS record and a reserved IP, in a running lab, and the
// plan command that fits them.
func newCmdLabSeed(f *Factory) *cobra.Command {
	var state, name, size string
	cmd := &cobra.Command{
		Use:   "seed",
		Short: "Create a server, a load balancer, a DNS record and a reserved IP in a running lab",
		Long: `Seed creates, in the lab that ` + "`vmswap lab serve --state STATE`" + ` runs: an SSH key (its private
half written to STATE/NAME.key), a droplet NAME serving a small site, a load balancer in
front of it, an A record www.NAME.test in the domain NAME.test, and a reserved IP on it.
It prints the plan command that swaps NAME, with the lab's endpoint, nameserver and SSH
port filled in.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ep, err := readLabEndpoints(state)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			sd := lab.NewSeeder(ep)
			_, priv, err := ed25519.GenerateKey(rand.Reader)
			if err != nil {
				return err
			}
			blk, err := ssh.MarshalPrivateKey(priv, "")
			if err != nil {
				return err
			}
			keyFile := filepath.Join(state, name+".key")
			if err := os.WriteFile(keyFile, pem.EncodeToMemory(blk), 0o600); err != nil {
				return err
			}
			signer, err := ssh.NewSignerFromKey(priv)
			if err != nil {
				return err
			}
			keyID, err := sd.AddKey(ctx, name, string(ssh.MarshalAuthorizedKey(signer.PublicKey())))
			if err != nil {
				return exitf(runner.ExitAttention, "lab seed: %v", err)
			}
			id, ip, err := sd.Droplet(ctx, name, size, []int{keyID}, map[string]string{"index.html": "<h1>" + name + "</h1>\n"})
			if err != nil {
				return exitf(runner.ExitAttention, "lab seed: %v", err)
			}
			lbID, lbIP, err := sd.LoadBalancer(ctx, name+"-lb", []int{id})
			if err != nil {
				return exitf(runner.ExitAttention, "lab seed: %v", err)
			}
			domain := name + ".test"
			if err := sd.Record(ctx, domain, "www", ip, 30); err != nil {
				return exitf(runner.ExitAttention, "lab seed: %v", err)
			}
			rip, err := sd.ReservedIP(ctx, id)
			if err != nil {
				return exitf(runner.ExitAttention, "lab seed: %v", err)
			}
			w := f.IO.Out
			fmt.Fprintf(w, "droplet %s (%s) at %s; load balancer %s at %s; www.%s A %s; reserved IP %s\n", name, size, ip, lbID, lbIP, domain, ip, rip)
			fmt.Fprintf(w, "\nexport DIGITALOCEAN_TOKEN=$(jq -r .token %s)\n", filepath.Join(state, "endpoints.json"))
			common := []string{"vmswap plan", "--endpoint " + ep.DigitalOceanAPI, "--source " + name, "--size s-2vcpu-4gb",
				"--ssh-user root", "--ssh-key " + keyFile, fmt.Sprintf("--ssh-port %d", ep.SSHPort), "--memory '>= 3.5GiB'",
				fmt.Sprintf("--http http://www.%s:%d/", domain, ep.HTTPPort), "--compare /", "--observe 10s"}
			fmt.Fprintf(w, "\n# through the load balancer:\n%s \\\n  --lb %s --identify-header X-Served-By -o %s-lb.yaml\n", strings.Join(common, " \\\n  "), lbID, name)
			fmt.Fprintf(w, "\n# through DNS:\n%s \\\n  --dns www.%s --nameserver %s --probe-url http://www.%s:%d/ --probe-resolver %s -o %s-dns.yaml\n", strings.Join(common, " \\\n  "), domain, ep.DNS, domain, ep.HTTPPort, ep.DNS, name)
			fmt.Fprintf(w, "\n# through the reserved IP:\n%s \\\n  --reserved-ip %s --probe-url http://%s:%d/ -o %s-ip.yaml\n", strings.Join(common, " \\\n  "), rip, rip, ep.HTTPPort, name)
			return nil
		},
	}
	cmd.Flags().StringVar(&state, "state", ".vmswap-lab", "the lab's state directory")
	cmd.Flags().StringVar(&name, "name", "web-1", "the droplet's name")
	cmd.Flags().StringVar(&size, "size", "s-1vcpu-1gb", "the droplet's size")
	return cmd
}
