package containerd

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	// The daemon's plugins, exactly as upstream containerd registers them.
	_ "github.com/containerd/containerd/v2/cmd/containerd/builtins"
	"github.com/containerd/containerd/v2/cmd/containerd/command"
	ctr "github.com/containerd/containerd/v2/cmd/ctr/app"

	"github.com/skiff-dev/skiff/internal/host"
)

// Main runs the containerd daemon with args (the program name first).
func Main(args []string) int {
	if err := command.App().Run(context.Background(), args); err != nil {
		fmt.Fprintf(os.Stderr, "containerd: %v\n", err)
		return 1
	}
	return 0
}

// CtrMain runs the upstream ctr against the node's containerd (the default
// data dir's socket, in the CRI namespace) unless told otherwise.
func CtrMain(args []string) int {
	if os.Getenv("CONTAINERD_ADDRESS") == "" {
		os.Setenv("CONTAINERD_ADDRESS", filepath.Join(host.DefaultRunDir, "containerd", "containerd.sock"))
	}
	if os.Getenv("CONTAINERD_NAMESPACE") == "" {
		os.Setenv("CONTAINERD_NAMESPACE", Namespace)
	}
	if err := ctr.New().Run(context.Background(), args); err != nil {
		fmt.Fprintln(os.Stderr, "ctr:", err)
		return 1
	}
	return 0
}
