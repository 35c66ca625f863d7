package cli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/skiff-dev/skiff/internal/atomicfile"
	"github.com/skiff-dev/skiff/internal/host"
	"github.com/skiff-dev/skiff/internal/pki"
	"github.com/skiff-dev/skiff/internal/server"
)

// certificateCommand shows the node's certificates and asks for new ones.
func certificateCommand() *cli.Command {
	dataDir := &cli.StringFlag{Name: "data-dir", Aliases: []string{"d"}, Value: host.DefaultDataDir, Usage: "the node's data dir"}
	return &cli.Command{
		Name:  "certificate",
		Usage: "the certificates of this node's data dir: check (list them with their expiry), rotate (new ones at the next start)",
		Subcommands: []*cli.Command{
			{
				Name:  "check",
				Usage: "list every certificate of the data dir with its expiry",
				Flags: []cli.Flag{dataDir},
				Action: func(c *cli.Context) error {
					dir, err := filepath.Abs(c.String("data-dir"))
					if err != nil {
						return err
					}
					certs, err := pki.Describe(filepath.Join(dir, "server", "tls"), filepath.Join(dir, "agent"))
					if err != nil {
						return err
					}
					if len(certs) == 0 {
						return fmt.Errorf("no certificates in %s: give the node's data dir with --data-dir", dir)
					}
					w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
					fmt.Fprintln(w, "FILE\tSUBJECT\tISSUER\tEXPIRES\tIN")
					now := time.Now()
					for _, d := range certs {
						left := d.NotAfter.Sub(now)
						in := fmt.Sprintf("%dd", int(left.Hours()/24))
						if left <= 0 {
							in = "EXPIRED"
						}
						subject := d.Subject
						if d.IsCA {
							subject += " [CA]"
						}
						rel, _ := filepath.Rel(dir, d.File)
						fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", rel, subject, d.Issuer, d.NotAfter.UTC().Format(time.RFC3339), in)
					}
					return w.Flush()
				},
			},
			{
				Name:  "rotate",
				Usage: "issue the server's certificates anew at its next start (the CAs stay; an agent renews its own at every start)",
				Flags: []cli.Flag{dataDir},
				Action: func(c *cli.Context) error {
					dir, err := filepath.Abs(c.String("data-dir"))
					if err != nil {
						return err
					}
					if _, err := os.Stat(filepath.Join(dir, "server", "tls")); errors.Is(err, os.ErrNotExist) {
						if _, err := os.Stat(filepath.Join(dir, "agent")); err == nil {
							fmt.Println("an agent renews its certificates at every start: restart it")
							return nil
						}
						return fmt.Errorf("%s holds no server: give the server's data dir with --data-dir", dir)
					}
					if err := atomicfile.Write(server.RotateMarker(dir), []byte("requested "+time.Now().UTC().Format(time.RFC3339)+"\n"), 0o600); err != nil {
						return err
					}
					fmt.Println("the server issues its certificates anew at its next start: restart it")
					return nil
				},
			},
		},
	}
}
