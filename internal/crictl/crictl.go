// Package crictl is `skiff crictl`: the everyday listing commands of crictl
// (ps, pods, images, version) against the node's CRI runtime.
//
// Written by hand on k8s.io/cri-client: cri-tools publishes crictl only as a
// main package, which cannot be linked into skiff.
package crictl

import (
	"context"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"
	"go.opentelemetry.io/otel/trace/noop"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
	remote "k8s.io/cri-client/pkg"
)

// DefaultEndpoint is the built-in containerd of the default data dir.
const DefaultEndpoint = "unix:///run/skiff/containerd/containerd.sock"

// Main runs crictl with args (program name first) and returns the exit code.
func Main(args []string) int {
	app := &cli.App{
		Name:            "crictl",
		Usage:           "inspect the node's containers, pods and images",
		HideHelpCommand: true,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "runtime-endpoint", Aliases: []string{"r"}, Value: DefaultEndpoint, EnvVars: []string{"CONTAINER_RUNTIME_ENDPOINT"}, Usage: "CRI socket"},
		},
		Commands: []*cli.Command{
			{Name: "ps", Usage: "list containers", Flags: []cli.Flag{
				&cli.BoolFlag{Name: "all", Aliases: []string{"a"}, Usage: "include exited containers"},
				&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "only IDs"},
			}, Action: ps},
			{Name: "pods", Usage: "list pod sandboxes", Flags: []cli.Flag{
				&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "only IDs"},
			}, Action: pods},
			{Name: "images", Aliases: []string{"img"}, Usage: "list images", Flags: []cli.Flag{
				&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "only IDs"},
			}, Action: images},
			{Name: "version", Usage: "runtime name and version", Action: version},
		},
	}
	if err := app.Run(args); err != nil {
		fmt.Fprintln(os.Stderr, "crictl:", err)
		return 1
	}
	return 0
}

func runtimeService(c *cli.Context) (context.Context, context.CancelFunc, remoteRuntime, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	rs, err := remote.NewRemoteRuntimeService(ctx, c.String("runtime-endpoint"), 10*time.Second, noop.NewTracerProvider(), false)
	if err != nil {
		cancel()
		return nil, nil, nil, fmt.Errorf("connecting to %s: %w", c.String("runtime-endpoint"), err)
	}
	return ctx, cancel, rs, nil
}

type remoteRuntime interface {
	ListContainers(ctx context.Context, filter *cri.ContainerFilter) ([]*cri.Container, error)
	ListPodSandbox(ctx context.Context, filter *cri.PodSandboxFilter) ([]*cri.PodSandbox, error)
	Version(ctx context.Context, apiVersion string) (*cri.VersionResponse, error)
}

func ps(c *cli.Context) error {
	ctx, cancel, rs, err := runtimeService(c)
	if err != nil {
		return err
	}
	defer cancel()
	var filter *cri.ContainerFilter
	if !c.Bool("all") {
		filter = &cri.ContainerFilter{State: &cri.ContainerStateValue{State: cri.ContainerState_CONTAINER_RUNNING}}
	}
	containers, err := rs.ListContainers(ctx, filter)
	if err != nil {
		return err
	}
	sandboxes, err := rs.ListPodSandbox(ctx, nil)
	if err != nil {
		return err
	}
	podNames := map[string]string{}
	for _, s := range sandboxes {
		podNames[s.Id] = s.Metadata.GetName()
	}
	w := table("CONTAINER", "IMAGE", "CREATED", "STATE", "NAME", "ATTEMPT", "POD ID", "POD")
	for _, ct := range containers {
		if c.Bool("quiet") {
			fmt.Println(ct.Id)
			continue
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", short(ct.Id), ct.Image.GetImage(), age(ct.CreatedAt),
			strings.TrimPrefix(ct.State.String(), "CONTAINER_"), ct.Metadata.GetName(), ct.Metadata.GetAttempt(), short(ct.PodSandboxId), podNames[ct.PodSandboxId])
	}
	return flush(c, w)
}

func pods(c *cli.Context) error {
	ctx, cancel, rs, err := runtimeService(c)
	if err != nil {
		return err
	}
	defer cancel()
	sandboxes, err := rs.ListPodSandbox(ctx, nil)
	if err != nil {
		return err
	}
	w := table("POD ID", "CREATED", "STATE", "NAME", "NAMESPACE", "ATTEMPT")
	for _, s := range sandboxes {
		if c.Bool("quiet") {
			fmt.Println(s.Id)
			continue
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\n", short(s.Id), age(s.CreatedAt), strings.TrimPrefix(s.State.String(), "SANDBOX_"),
			s.Metadata.GetName(), s.Metadata.GetNamespace(), s.Metadata.GetAttempt())
	}
	return flush(c, w)
}

func images(c *cli.Context) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	is, err := remote.NewRemoteImageService(ctx, c.String("runtime-endpoint"), 10*time.Second, noop.NewTracerProvider(), false)
	if err != nil {
		return fmt.Errorf("connecting to %s: %w", c.String("runtime-endpoint"), err)
	}
	resp, err := is.ListImages(ctx, nil)
	if err != nil {
		return err
	}
	w := table("IMAGE", "TAG", "IMAGE ID", "SIZE")
	for _, img := range resp {
		if c.Bool("quiet") {
			fmt.Println(img.Id)
			continue
		}
		for _, tag := range img.RepoTags {
			i := strings.LastIndex(tag, ":")
			fmt.Fprintf(w, "%s\t%s\t%s\t%.1fMB\n", tag[:i], tag[i+1:], short(strings.TrimPrefix(img.Id, "sha256:")), float64(img.Size)/1e6)
		}
	}
	return flush(c, w)
}

func version(c *cli.Context) error {
	ctx, cancel, rs, err := runtimeService(c)
	if err != nil {
		return err
	}
	defer cancel()
	v, err := rs.Version(ctx, "v1")
	if err != nil {
		return err
	}
	fmt.Printf("RuntimeName:  %s\nRuntimeVersion:  %s\nRuntimeApiVersion:  %s\n", v.RuntimeName, v.RuntimeVersion, v.RuntimeApiVersion)
	return nil
}

func table(headers ...string) *tabwriter.Writer {
	w := tabwriter.NewWriter(os.Stdout, 0, 8, 3, ' ', 0)
	fmt.Fprintln(w, strings.Join(headers, "\t"))
	return w
}

func flush(c *cli.Context, w *tabwriter.Writer) error {
	if c.Bool("quiet") {
		return nil
	}
	return w.Flush()
}

func short(id string) string {
	if len(id) > 13 {
		return id[:13]
	}
	return id
}

func age(createdAt int64) string {
	return time.Since(time.Unix(0, createdAt)).Round(time.Second).String() + " ago"
}
