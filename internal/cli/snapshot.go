package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/skiff-dev/skiff/internal/etcd"
	"github.com/skiff-dev/skiff/internal/host"
	"github.com/skiff-dev/skiff/internal/server"
	"github.com/skiff-dev/skiff/internal/snapshot"
)

// snapshotCommand saves, lists and prunes snapshots of the embedded
// datastore.
func snapshotCommand() *cli.Command {
	flags := func(extra ...cli.Flag) []cli.Flag {
		return append([]cli.Flag{
			&cli.StringFlag{Name: "data-dir", Aliases: []string{"d"}, Value: host.DefaultDataDir, Usage: "the server's data dir"},
			&cli.StringFlag{Name: "snapshot-dir", Usage: "where snapshots are (default: <data-dir>/server/db/snapshots)"},
		}, extra...)
	}
	dirs := func(c *cli.Context) (dataDir, snapDir string, err error) {
		if dataDir, err = filepath.Abs(c.String("data-dir")); err != nil {
			return "", "", err
		}
		return dataDir, server.SnapshotDir(dataDir, c.String("snapshot-dir")), nil
	}
	return &cli.Command{
		Name:         "snapshot",
		Usage:        "snapshots of the embedded datastore: save (online), ls, prune; restore with `skiff server --cluster-reset --cluster-reset-restore-path FILE`",
		OnUsageError: usageError,
		Subcommands: []*cli.Command{
			{
				Name:         "save",
				Usage:        "save a snapshot of the server's datastore, running or not",
				OnUsageError: usageError,
				Flags:        flags(&cli.StringFlag{Name: "name", Value: snapshot.OnDemandName, Usage: "the snapshot's name; the file is NAME-HOST-UNIXTIME"}),
				Action: func(c *cli.Context) error {
					dataDir, snapDir, err := dirs(c)
					if err != nil {
						return err
					}
					src, err := server.SnapshotSource(dataDir)
					if err != nil {
						return err
					}
					start := time.Now()
					path, err := snapshot.Save(c.Context, src, snapDir, c.String("name"))
					if err != nil {
						return err
					}
					fi, _ := os.Stat(path)
					fmt.Printf("%s (%d bytes, %.1f s)\n", path, fi.Size(), time.Since(start).Seconds())
					return nil
				},
			},
			{
				Name:         "ls",
				Aliases:      []string{"list"},
				Usage:        "list the snapshots, newest first",
				OnUsageError: usageError,
				Flags:        flags(),
				Action: func(c *cli.Context) error {
					dataDir, snapDir, err := dirs(c)
					if err != nil {
						return err
					}
					all, err := snapshot.List(snapDir)
					if err != nil {
						return err
					}
					if etcd.Exists(server.ETCDDir(dataDir)) {
						fmt.Fprintf(os.Stderr, "the server in %s runs on the embedded etcd, of which no snapshots are made yet: these are older ones\n", dataDir)
					}
					w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
					fmt.Fprintln(w, "PATH\tSIZE\tCREATED")
					for _, s := range all {
						fmt.Fprintf(w, "%s\t%d\t%s\n", s.Path, s.Size, s.Created.UTC().Format(time.RFC3339))
					}
					return w.Flush()
				},
			},
			{
				Name:         "prune",
				Usage:        "delete all but the newest --retention snapshots of one name",
				OnUsageError: usageError,
				Flags: flags(
					&cli.StringFlag{Name: "name", Value: snapshot.OnDemandName, Usage: "prune the snapshots of this name"},
					&cli.IntFlag{Name: "retention", Value: snapshot.DefaultRetention, Usage: "how many to keep"},
				),
				Action: func(c *cli.Context) error {
					_, snapDir, err := dirs(c)
					if err != nil {
						return err
					}
					deleted, err := snapshot.Prune(snapDir, c.String("name"), c.Int("retention"))
					for _, d := range deleted {
						fmt.Println("deleted", d)
					}
					return err
				},
			},
		},
	}
}
