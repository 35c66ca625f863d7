package cli

import (
	"errors"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/skiff-dev/skiff/internal/join"
	"github.com/skiff-dev/skiff/internal/kubectl"
)

// tokenCommand manages the cluster's extra join tokens. The server's own
// token is in its <data-dir>/server/token and changes only with --token.
func tokenCommand() *cli.Command {
	kubeconfigFlag := &cli.StringFlag{Name: "kubeconfig", Value: kubectl.DefaultKubeconfig, EnvVars: []string{"KUBECONFIG"}, Usage: "admin kubeconfig of the cluster"}
	return &cli.Command{
		Name:         "token",
		Usage:        "create, list and delete join tokens for agents",
		OnUsageError: usageError,
		Subcommands: []*cli.Command{
			{
				Name:         "create",
				Usage:        "create a join token and print it",
				OnUsageError: usageError,
				Flags: []cli.Flag{
					kubeconfigFlag,
					&cli.DurationFlag{Name: "ttl", Value: 24 * time.Hour, Usage: "how long the token can join nodes (0: forever)"},
					&cli.StringFlag{Name: "description", Usage: "what the token is for"},
				},
				Action: func(c *cli.Context) error {
					if c.Duration("ttl") < 0 {
						return fmt.Errorf("--ttl %s is negative: give a duration such as 24h, or 0 for a token that never expires", c.Duration("ttl"))
					}
					client, caHash, err := adminClient(c.String("kubeconfig"))
					if err != nil {
						return err
					}
					t, err := join.CreateToken(c.Context, client, caHash, c.Duration("ttl"), c.String("description"))
					if err != nil {
						return fmt.Errorf("creating the token: %w", err)
					}
					fmt.Println(t.String())
					return nil
				},
			},
			{
				Name:         "list",
				Usage:        "list the join tokens (not their secrets)",
				OnUsageError: usageError,
				Flags:        []cli.Flag{kubeconfigFlag},
				Action: func(c *cli.Context) error {
					client, _, err := adminClient(c.String("kubeconfig"))
					if err != nil {
						return err
					}
					tokens, err := join.ListTokens(c.Context, client)
					if err != nil {
						return fmt.Errorf("listing the tokens: %w", err)
					}
					w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
					fmt.Fprintln(w, "ID\tEXPIRES\tDESCRIPTION")
					for _, t := range tokens {
						exp := "never"
						if !t.Expires.IsZero() {
							exp = t.Expires.Local().Format(time.RFC3339)
							if time.Now().After(t.Expires) {
								exp += " (expired)"
							}
						}
						fmt.Fprintf(w, "%s\t%s\t%s\n", t.ID, exp, t.Description)
					}
					return w.Flush()
				},
			},
			{
				Name:         "delete",
				Usage:        "delete join tokens by ID",
				ArgsUsage:    "ID...",
				OnUsageError: usageError,
				Flags:        []cli.Flag{kubeconfigFlag},
				Action: func(c *cli.Context) error {
					if c.NArg() == 0 {
						return errors.New("token delete needs the IDs of the tokens to delete: `skiff token list` shows them")
					}
					client, _, err := adminClient(c.String("kubeconfig"))
					if err != nil {
						return err
					}
					for _, id := range c.Args().Slice() {
						if err := join.DeleteToken(c.Context, client, id); err != nil {
							return err
						}
					}
					return nil
				},
			},
		},
	}
}

// adminClient is a clientset from the admin kubeconfig, and the hash of the
// server CA it trusts, which is what joining agents check.
func adminClient(path string) (kubernetes.Interface, string, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, "", fmt.Errorf("--kubeconfig %s: %v: run this on the server, or give the admin kubeconfig", path, err)
	}
	ca := cfg.CAData
	if len(ca) == 0 && cfg.CAFile != "" {
		if ca, err = os.ReadFile(cfg.CAFile); err != nil {
			return nil, "", err
		}
	}
	if len(ca) == 0 {
		return nil, "", fmt.Errorf("--kubeconfig %s has no certificate authority, so the token could not carry its hash", path)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, "", err
	}
	return client, join.CAHash(ca), nil
}
