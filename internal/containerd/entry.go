package containerd

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"

	// The daemon's plugins, exactly as upstream containerd registers them.
	"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/manager"
	"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/task"
	_ "github.com/containerd/containerd/v2/cmd/containerd/builtins"
	"github.com/containerd/containerd/v2/cmd/containerd/command"
	ctr "github.com/containerd/containerd/v2/cmd/ctr/app"
	"github.com/containerd/containerd/v2/pkg/shim"
	"github.com/containerd/containerd/v2/pkg/shutdown"
	"github.com/containerd/containerd/v2/plugins"
	"github.com/containerd/plugin"
	"github.com/containerd/plugin/registry"
	"github.com/skiff-dev/skiff/internal/host"
)

// ShimName is the name containerd looks the runc shim up by.
const ShimName = "containerd-shim-runc-v2"

// IsShim says whether this process was started as the runc shim: by its
// name, or re-executed by the shim itself, which passes only its flags.
func IsShim(args []string) bool {
	return filepath.Base(args[0]) == ShimName || len(args) > 1 && args[1] == "-namespace"
}

// Main runs the containerd daemon with args (the program name first).
func Main(args []string) int {
	if err := command.App().Run(context.Background(), args); err != nil {
		fmt.Fprintf(os.Stderr, "containerd: %v\n", err)
		return 1
	}
	return 0
}

// ShimMain runs the runc shim v2. It never returns.
func ShimMain() {
	// Every package of the binary ran its init before this, most of it
	// garbage to a shim: collect it and give the memory back now rather
	// than leave it to the runtime's slow scavenging, in each pod's shim.
	debug.FreeOSMemory()
	// The daemon's plugins are registered in this binary too; a shim loads
	// every registered plugin, so it starts from an empty registry and adds
	// its task service, as the upstream shim binary's own plugin does.
	registry.Reset()
	registry.Register(&plugin.Registration{
		Type:     plugins.TTRPCPlugin,
		ID:       "task",
		Requires: []plugin.Type{plugins.EventPlugin, plugins.InternalPlugin},
		InitFn: func(ic *plugin.InitContext) (any, error) {
			pp, err := ic.GetByID(plugins.EventPlugin, "publisher")
			if err != nil {
				return nil, err
			}
			sd, err := ic.GetByID(plugins.InternalPlugin, "shutdown")
			if err != nil {
				return nil, err
			}
			return task.NewTaskService(ic.Context, pp.(shim.Publisher), sd.(shutdown.Service))
		},
	})
	// The shim defines its flags on the process-wide flag set, where
	// libraries linked into skiff (CoreDNS) registered theirs at init: start
	// it from an empty one.
	flag.CommandLine = flag.NewFlagSet(os.Args[0], flag.ExitOnError)
	shim.RunShim(context.Background(), manager.NewShimManager("io.containerd.runc.v2"))
	os.Exit(0)
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
