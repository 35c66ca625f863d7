package cli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"github.com/skiff-dev/skiff/internal/host"
	"github.com/skiff-dev/skiff/internal/killall"
)

// killallCommand stops a node and its pods and removes what they set up on
// the host, keeping the data: the teardown of a throwaway cluster, and what
// skiff-killall.sh runs.
func killallCommand() *cli.Command {
	return &cli.Command{
		Name:  "killall",
		Usage: "stop the node of a data dir (skiff, containerd, pods) and remove its mounts, cgroups, pod bridge, overlay device and nftables table; the data stays",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "data-dir", Aliases: []string{"d"}, Value: host.DefaultDataDir, Usage: "the data dir of the node to stop"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return fmt.Errorf("killall takes no arguments, got %q: give the node's data dir with --data-dir", c.Args().First())
			}
			if os.Geteuid() != 0 {
				return errors.New("skiff killall must run as root: it stops processes and removes mounts, cgroups and network devices")
			}
			dir, err := filepath.Abs(c.String("data-dir"))
			if err != nil {
				return err
			}
			report, err := killall.For(dir).Run()
			fmt.Println(report)
			if err != nil {
				return fmt.Errorf("killall left something behind (%w): run it again once what holds it has ended, or reboot", err)
			}
			return nil
		},
	}
}
