package containerd

import (
	"context"
	"errors"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/fsnotify/fsnotify"
	"k8s.io/klog/v2"

	"github.com/skiff-dev/skiff/internal/atomicfile"
)

// serveRegistries starts the rewriting proxies on loopback, then writes the
// node's registry host directories, replacing the last start's.
func (c *Containerd) serveRegistries(ctx context.Context) error {
	addrs := map[string]string{}
	for _, key := range slices.Sorted(maps.Keys(c.proxies)) {
		ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		srv := &http.Server{Handler: c.proxies[key], ReadHeaderTimeout: 30 * time.Second}
		go srv.Serve(ln)
		context.AfterFunc(ctx, func() { srv.Close() })
		addrs[key] = "http://" + ln.Addr().String() + c.proxies[key].Root()
	}
	c.layout = c.Registries.Containerd(c.DisableDefaultEndpoint, addrs)

	// Written beside the live directory, then swapped in: containerd reads
	// a host's directory at each pull and never sees half of one.
	next := c.CertsDir + ".next"
	os.RemoveAll(next)
	if err := os.MkdirAll(next, 0o700); err != nil {
		return err
	}
	for _, dir := range slices.Sorted(maps.Keys(c.layout.Hosts)) {
		if err := os.Mkdir(filepath.Join(next, dir), 0o700); err != nil {
			return err
		}
		if err := atomicfile.Write(filepath.Join(next, dir, "hosts.toml"), c.layout.Hosts[dir], 0o600); err != nil {
			return err
		}
	}
	old := c.CertsDir + ".old"
	os.RemoveAll(old)
	if err := os.Rename(c.CertsDir, old); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := os.Rename(next, c.CertsDir); err != nil {
		return err
	}
	os.RemoveAll(old)

	if path := c.Registries.Path; path != "" {
		klog.InfoS("registries read", "file", path, "registries", slices.Sorted(maps.Keys(c.layout.Hosts)), "credentials", slices.Sorted(maps.Keys(c.layout.Auths)),
			"rewriting", len(addrs), "defaultEndpoint", !c.DisableDefaultEndpoint)
		go watchRegistries(ctx, path, c.Registries.Changed)
	}
	return nil
}

// watchRegistries says once, when the file changes after start, that the
// node runs on what it read at start.
func watchRegistries(ctx context.Context, path string, changed func() bool) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return
	}
	defer w.Close()
	if err := w.Add(filepath.Dir(path)); err != nil {
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-w.Events:
			if filepath.Clean(ev.Name) == filepath.Clean(path) && changed() {
				klog.InfoS("the registries file changed since this node started; restart the node to apply it", "file", path)
				return
			}
		case <-w.Errors:
		}
	}
}
