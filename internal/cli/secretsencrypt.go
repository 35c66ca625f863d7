package cli

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	_ "modernc.org/sqlite" // reads the embedded datastore

	"github.com/skiff-dev/skiff/internal/etcd"
	"github.com/skiff-dev/skiff/internal/host"
	"github.com/skiff-dev/skiff/internal/kubeconfig"
	"github.com/skiff-dev/skiff/internal/secretsencrypt"
	"github.com/skiff-dev/skiff/internal/server"
)

// probeSecret is written until the API server encrypts it with a new key:
// then it has reloaded its configuration.
const probeSecret = "skiff-encryption-probe"

// secretsEncryptCommand shows and rotates the keys Secrets are encrypted
// with.
func secretsEncryptCommand() *cli.Command {
	dataDir := &cli.StringFlag{Name: "data-dir", Aliases: []string{"d"}, Value: host.DefaultDataDir, Usage: "the server's data dir"}
	paths := func(c *cli.Context) (config, db, admin string, err error) {
		dir, err := filepath.Abs(c.String("data-dir"))
		if err != nil {
			return "", "", "", err
		}
		config = filepath.Join(dir, "server", "tls", "encryption-config.yaml")
		if _, err := os.Stat(config); err != nil {
			return "", "", "", fmt.Errorf("Secrets are not encrypted in %s (no %s): start the server with --secrets-encryption", dir, filepath.Base(config))
		}
		return config, filepath.Join(dir, "server", "db", "state.db"), filepath.Join(dir, "server", "tls", "admin.kubeconfig"), nil
	}
	return &cli.Command{
		Name:         "secrets-encrypt",
		Usage:        "Secrets encrypted at rest (--secrets-encryption): status, rotate-keys",
		OnUsageError: usageError,
		Subcommands: []*cli.Command{
			{
				Name:         "status",
				Usage:        "the provider, the keys, and how the stored Secrets are encrypted",
				OnUsageError: usageError,
				Flags:        []cli.Flag{dataDir},
				Action: func(c *cli.Context) error {
					config, db, _, err := paths(c)
					if err != nil {
						return err
					}
					cfg, err := secretsencrypt.Load(config)
					if err != nil {
						return err
					}
					fmt.Printf("provider: %s\nprimary key: %s\n", cfg.Provider, cfg.Keys[0])
					if len(cfg.Keys) > 1 {
						fmt.Printf("older keys: %s (a rotation is under way: run rotate-keys to finish it)\n", strings.Join(cfg.Keys[1:], ", "))
					}
					counts, err := storedSecrets(c.Context, db, cfg)
					if err != nil {
						fmt.Println("stored Secrets: not readable here (an external datastore?):", err)
						return nil
					}
					fmt.Printf("stored Secrets: %d with the primary key, %d with older keys, %d not encrypted\n", counts[0], counts[1], counts[2])
					return nil
				},
			},
			{
				Name:         "rotate-keys",
				Usage:        "encrypt every Secret with a new key, then drop the old ones; safe to interrupt and run again",
				OnUsageError: usageError,
				Flags:        []cli.Flag{dataDir},
				Action: func(c *cli.Context) error {
					config, db, admin, err := paths(c)
					if err != nil {
						return err
					}
					if dir, _ := filepath.Abs(c.String("data-dir")); etcd.Exists(server.ETCDDir(dir)) {
						return errors.New("rotate-keys does not work on the embedded etcd yet: the keys stay as they are")
					}
					if _, err := os.Stat(db); err != nil {
						return errors.New("rotate-keys works on the embedded datastore: with --datastore-endpoint, servers share the keys at start, and rotating them on one server is not supported yet")
					}
					cs, err := kubeconfig.Client(admin)
					if err != nil {
						return err
					}
					cfg, err := secretsencrypt.Load(config)
					if err != nil {
						return err
					}
					if len(cfg.Keys) == 1 {
						if cfg, err = secretsencrypt.AddKey(config); err != nil {
							return err
						}
						fmt.Println("added the key", cfg.Keys[0])
					} else {
						fmt.Println("finishing the rotation to", cfg.Keys[0])
					}
					fmt.Println("waiting for the API server to load it (it reads its configuration about once a minute)")
					if err := waitEncryptedWith(c.Context, cs, db, cfg); err != nil {
						return err
					}
					n, err := rewriteSecrets(c.Context, cs)
					if err != nil {
						return fmt.Errorf("rewriting the Secrets (run rotate-keys again to finish): %w", err)
					}
					if cfg, err = secretsencrypt.DropOldKeys(config); err != nil {
						return err
					}
					fmt.Printf("%d Secrets encrypted with %s; the older keys are dropped\n", n, cfg.Keys[0])
					return nil
				},
			},
		},
	}
}

// waitEncryptedWith writes the probe Secret until it is stored encrypted
// with cfg's primary key.
func waitEncryptedWith(ctx context.Context, cs kubernetes.Interface, db string, cfg *secretsencrypt.Config) error {
	d, err := openState(db)
	if err != nil {
		return err
	}
	defer d.Close()
	secrets := cs.CoreV1().Secrets(metav1.NamespaceSystem)
	defer secrets.Delete(context.Background(), probeSecret, metav1.DeleteOptions{})
	err = wait.PollUntilContextTimeout(ctx, 2*time.Second, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: probeSecret}, Data: map[string][]byte{"at": []byte(time.Now().String())}}
		if _, err := secrets.Update(ctx, s, metav1.UpdateOptions{}); apierrors.IsNotFound(err) {
			if _, err := secrets.Create(ctx, s, metav1.CreateOptions{}); err != nil {
				return false, nil
			}
		} else if err != nil {
			return false, nil
		}
		value, err := storedValue(ctx, d, "/registry/secrets/"+metav1.NamespaceSystem+"/"+probeSecret)
		return err == nil && strings.HasPrefix(value, cfg.Prefix()), nil
	})
	if err != nil {
		return fmt.Errorf("the API server did not load the new key within 3 minutes: is the server running? (run rotate-keys again to finish)")
	}
	return nil
}

// rewriteSecrets writes every Secret back unchanged: the API server then
// stores it with its primary key (one read with an older key is stale, and
// written even when unchanged).
func rewriteSecrets(ctx context.Context, cs kubernetes.Interface) (int, error) {
	list, err := cs.CoreV1().Secrets("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, s := range list.Items {
		err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			cur, err := cs.CoreV1().Secrets(s.Namespace).Get(ctx, s.Name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return true, nil
			} else if err != nil {
				return false, nil
			}
			_, err = cs.CoreV1().Secrets(s.Namespace).Update(ctx, cur, metav1.UpdateOptions{})
			return err == nil || apierrors.IsNotFound(err), nil
		})
		if err != nil {
			return n, fmt.Errorf("Secret %s/%s: %w", s.Namespace, s.Name, err)
		}
		n++
	}
	return n, nil
}

// openState opens the embedded datastore's database to read it.
func openState(path string) (*sql.DB, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, err
	}
	return sql.Open("sqlite", "file:"+path+"?mode=ro&_pragma=busy_timeout(10000)")
}

// storedValue is the newest value of key in the embedded datastore.
func storedValue(ctx context.Context, d *sql.DB, key string) (string, error) {
	var v []byte
	err := d.QueryRowContext(ctx, `SELECT value FROM kine WHERE name = ? ORDER BY id DESC LIMIT 1`, key).Scan(&v)
	return string(v), err
}

// storedSecrets counts the stored Secrets by how they are encrypted: with
// the primary key, an older one, not at all.
func storedSecrets(ctx context.Context, db string, cfg *secretsencrypt.Config) ([3]int, error) {
	var counts [3]int
	d, err := openState(db)
	if err != nil {
		return counts, err
	}
	defer d.Close()
	rows, err := d.QueryContext(ctx, `SELECT value FROM kine WHERE id IN (SELECT MAX(id) FROM kine WHERE name LIKE '/registry/secrets/%' GROUP BY name) AND deleted = 0`)
	if err != nil {
		return counts, err
	}
	defer rows.Close()
	for rows.Next() {
		var v []byte
		if err := rows.Scan(&v); err != nil {
			return counts, err
		}
		switch s := string(v); {
		case strings.HasPrefix(s, cfg.Prefix()):
			counts[0]++
		case strings.HasPrefix(s, "k8s:enc:"):
			counts[1]++
		default:
			counts[2]++
		}
	}
	return counts, rows.Err()
}
