package cli

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/skiff-dev/skiff/internal/atomicfile"
	"github.com/skiff-dev/skiff/internal/bootstrap"
	"github.com/skiff-dev/skiff/internal/etcd"
	"github.com/skiff-dev/skiff/internal/host"
	"github.com/skiff-dev/skiff/internal/join"
	"github.com/skiff-dev/skiff/internal/kubectl"
	"github.com/skiff-dev/skiff/internal/server"
)

// tokenCommand manages the cluster's extra join tokens, and rotates the
// server's own (in its <data-dir>/server/token).
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
				Name:  "rotate",
				Usage: "give the server token a new secret, with the cluster's CA files in an external datastore sealed anew under it",
				Description: "Run on a server while it runs. From then on this server refuses joins with the old token and seals its scheduled snapshots with the new one;\n" +
					"agents joined already keep working. Restart every other server with --token set to the new token.",
				OnUsageError: usageError,
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "data-dir", Aliases: []string{"d"}, Value: host.DefaultDataDir, Usage: "the server's data dir"},
					&cli.StringFlag{Name: "new-token", Usage: "the new secret, at least 16 characters (default: a random one)"},
				},
				Action: func(c *cli.Context) error {
					t, err := rotateToken(c.Context, c.String("data-dir"), c.String("new-token"))
					if err != nil {
						return err
					}
					fmt.Println(t)
					fmt.Fprintln(os.Stderr, "the server token is rotated: this server refuses the old one from now on; restart every other server with --token set to the new token, and change a --token or token: in this server's config before its next start; agents joined already keep working")
					return nil
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

// rotateToken gives the server token of the server in dataDir a new secret.
// With an external datastore the cluster's shared CA files are sealed under
// it first, through the running server's datastore socket; the token file
// is written last, so a failure leaves the old token in force.
func rotateToken(ctx context.Context, dataDir, secret string) (join.Token, error) {
	dir, err := filepath.Abs(dataDir)
	if err != nil {
		return join.Token{}, err
	}
	path := filepath.Join(dir, "server", "token")
	old, err := join.ReadServerToken(path)
	var unread *fs.PathError
	if errors.As(err, &unread) {
		return join.Token{}, fmt.Errorf("no server token in %s (%v): run this on a server, with its --data-dir", dir, err)
	} else if err != nil || old.CAHash == "" {
		return join.Token{}, fmt.Errorf("%s holds no server token: %v", path, err)
	}
	if secret == "" {
		secret = join.NewServerSecret()
	}
	switch given, err := join.ParseToken(secret); {
	case err != nil:
		return join.Token{}, fmt.Errorf("--new-token: %w", err)
	case given.ID != "" || given.Agent != "" || strings.Contains(secret, "::"):
		return join.Token{}, errors.New("--new-token takes the new secret alone, not a token")
	case len(secret) < 16:
		return join.Token{}, errors.New("--new-token: the secret is shorter than 16 characters, short enough to guess: give a longer one")
	case secret == old.Server:
		return join.Token{}, errors.New("--new-token is the secret the server token has now: give another")
	}
	db := filepath.Join(dir, "server", "db")
	_, sqliteErr := os.Stat(filepath.Join(db, "state.db"))
	if sqliteErr != nil && !etcd.Exists(server.ETCDDir(dir)) {
		// An external datastore holds the CA files sealed with the secret.
		sock := filepath.Join(db, "kine.sock")
		if _, err := os.Stat(sock); err != nil {
			return join.Token{}, fmt.Errorf("the server in %s is not running (no %s): start it first, the rotation seals the cluster's CA files in its datastore anew", dir, sock)
		}
		cl, err := clientv3.New(clientv3.Config{Endpoints: []string{"unix://" + sock}, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			return join.Token{}, err
		}
		defer cl.Close()
		ctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		if _, err := bootstrap.Reseal(ctx, cl, old.Server, secret); err != nil {
			return join.Token{}, err
		}
	}
	t := join.Token{CAHash: old.CAHash, Server: secret}
	return t, atomicfile.Write(path, []byte(t.String()+"\n"), 0o600)
}
