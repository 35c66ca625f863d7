// Package dns runs the node's cluster DNS: CoreDNS, linked in as a library,
// answering for the cluster domain from the API server and forwarding other
// names to the host's resolvers. Each node runs its own, on its pod bridge's
// address; the service proxy steers the kube-dns Service there.
package dns

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"text/template"
	"time"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver" // the "dns" server type
	"github.com/coredns/coredns/plugin"
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/hosts"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/rewrite"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/skiff-dev/skiff/internal/atomicfile"
	"github.com/skiff-dev/skiff/internal/component"
	"github.com/skiff-dev/skiff/internal/kubeconfig"
	"github.com/skiff-dev/skiff/internal/logging"
)

// CustomConfigMap in kube-system holds extra Corefile snippets: keys ending
// in .override go inside the cluster zone's server block, keys ending in
// .server are whole server blocks of their own.
const CustomConfigMap = "coredns-custom"

// HealthPort is where CoreDNS's health plugin answers, on the DNS address:
// among the ports of the kubelet and control plane, away from 8080, which
// Gateway listeners take (the node's ingress listens on every address).
const HealthPort = 10253

// logDirective is a directive of skiff's own, set up right after the
// kubernetes plugin: that plugin's setup replaces klog's logger with
// CoreDNS's (every line of the process would then read "[INFO]
// plugin/kubernetes: ..."), and this one puts the process's logger back.
const logDirective = "skiff_log"

func init() {
	// CoreDNS prints the zones it serves to stdout; the component logs its
	// own line instead.
	caddy.Quiet, dnsserver.Quiet = true, true
	plugin.Register(logDirective, func(*caddy.Controller) error {
		logging.Restore()
		return nil
	})
	for i, d := range dnsserver.Directives {
		if d == "kubernetes" {
			dnsserver.Directives = slices.Insert(dnsserver.Directives, i+1, logDirective)
			break
		}
	}
}

// Config is the node DNS's settings.
type Config struct {
	Kubeconfig    string
	ClusterDomain string
	// ResolvConf lists the upstream resolvers for names outside the cluster.
	ResolvConf string
	// Dir receives the Corefile snippets of the custom ConfigMap.
	Dir string
	// Address blocks until the address to answer on is known.
	Address func(context.Context) (net.IP, error)
}

// DNS is the node DNS component. It is ready at once: pods can't query it
// before the node has its pod network, and it starts answering then.
type DNS struct {
	cfg Config
	component.Latch
}

// New returns the node DNS component.
func New(cfg Config) (*DNS, error) {
	if cfg.Kubeconfig == "" || cfg.Address == nil || cfg.Dir == "" {
		return nil, fmt.Errorf("dns: a kubeconfig, a dir and an address are needed")
	}
	return &DNS{cfg: cfg}, nil
}

// Name implements component.Component.
func (d *DNS) Name() string { return "dns" }

// Run implements component.Component.
func (d *DNS) Run(ctx context.Context) error {
	d.SetReady()
	ip, err := d.cfg.Address(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	client, err := kubeconfig.Client(d.cfg.Kubeconfig)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(d.cfg.Dir, 0o700); err != nil {
		return err
	}

	// The custom snippets are watched with an informer; each change writes
	// them to Dir and reloads CoreDNS in place. A bad snippet is logged and
	// the running configuration kept.
	changed := make(chan struct{}, 1)
	var mu sync.Mutex
	var snippets map[string]string
	set := func(obj any) {
		cm, _ := obj.(*v1.ConfigMap)
		mu.Lock()
		snippets = nil
		if cm != nil {
			snippets = cm.Data
		}
		mu.Unlock()
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	sel := fields.OneTermEqualSelector("metadata.name", CustomConfigMap).String()
	lw := &cache.ListWatch{
		ListFunc: func(o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = sel
			return client.CoreV1().ConfigMaps(metav1.NamespaceSystem).List(ctx, o)
		},
		WatchFunc: func(o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = sel
			return client.CoreV1().ConfigMaps(metav1.NamespaceSystem).Watch(ctx, o)
		},
	}
	store, informer := cache.NewInformerWithOptions(cache.InformerOptions{
		ListerWatcher: lw,
		ObjectType:    &v1.ConfigMap{},
		Handler: cache.ResourceEventHandlerFuncs{
			AddFunc:    set,
			UpdateFunc: func(_, obj any) { set(obj) },
			DeleteFunc: func(any) { set(nil) },
		},
	})
	go informer.Run(ctx.Done())
	if !cache.WaitFor(ctx, "", informer.HasSyncedChecker()) {
		return nil
	}

	var inst *caddy.Instance
	defer func() {
		if inst != nil {
			inst.Stop()
			inst.ShutdownCallbacks()
		}
	}()
	load := func() error {
		mu.Lock()
		s := snippets
		mu.Unlock()
		if err := writeSnippets(d.cfg.Dir, s); err != nil {
			return err
		}
		corefile, err := Corefile(CorefileParams{
			IP: ip.String(), Domain: d.cfg.ClusterDomain, Kubeconfig: d.cfg.Kubeconfig,
			Upstream: upstream(d.cfg.ResolvConf), Dir: d.cfg.Dir,
		})
		if err != nil {
			return err
		}
		input := caddy.CaddyfileInput{Contents: corefile, Filepath: "Corefile", ServerTypeName: "dns"}
		if inst == nil {
			inst, err = caddy.Start(input)
			return err
		}
		next, err := inst.Restart(input)
		if err != nil {
			return err
		}
		inst = next
		return nil
	}
	// Start from what the first list found (the ConfigMap may not exist).
	set(nil)
	for _, obj := range store.List() {
		set(obj)
	}
	<-changed
	if err := load(); err != nil {
		return fmt.Errorf("starting CoreDNS on %s: %w", ip, err)
	}
	if err := waitHealthy(ctx, ip); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	klog.InfoS("cluster DNS is answering", "address", ip.String(), "domain", d.cfg.ClusterDomain)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
			if err := load(); err != nil {
				klog.ErrorS(err, "kube-system/"+CustomConfigMap+" not loaded; the DNS keeps its previous configuration")
			} else {
				klog.InfoS("cluster DNS reloaded", "configmap", "kube-system/"+CustomConfigMap)
			}
		}
	}
}

// waitHealthy waits for the health endpoint, so that the log line about
// answering is true.
func waitHealthy(ctx context.Context, ip net.IP) error {
	url := fmt.Sprintf("http://%s/health", net.JoinHostPort(ip.String(), fmt.Sprint(HealthPort)))
	deadline := time.Now().Add(30 * time.Second)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("CoreDNS on %s did not become healthy: %v", ip, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// writeSnippets replaces the snippet files in dir with the ConfigMap's.
func writeSnippets(dir string, data map[string]string) error {
	old, _ := filepath.Glob(filepath.Join(dir, "*"))
	for _, f := range old {
		if _, ok := data[filepath.Base(f)]; !ok {
			os.Remove(f)
		}
	}
	for k, v := range data {
		if k != filepath.Base(k) || strings.HasPrefix(k, ".") {
			continue // not a plain file name
		}
		if err := atomicfile.Write(filepath.Join(dir, k), []byte(v), 0o600); err != nil {
			return err
		}
	}
	return nil
}

// upstream returns the nameservers of a resolv.conf file.
func upstream(path string) []string {
	f, err := os.Open(path)
	if err != nil {
		klog.ErrorS(err, "no upstream resolvers: names outside the cluster will not resolve (see --resolv-conf)")
		return nil
	}
	defer f.Close()
	var out []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		fs := strings.Fields(s.Text())
		if len(fs) >= 2 && fs[0] == "nameserver" && net.ParseIP(fs[1]) != nil {
			out = append(out, fs[1])
		}
	}
	if len(out) == 0 {
		klog.InfoS("no nameserver in the resolv.conf: names outside the cluster will not resolve (see --resolv-conf)", "path", path)
	}
	return out
}

// CorefileParams fill the Corefile template.
type CorefileParams struct {
	IP, Domain, Kubeconfig, Dir string
	Upstream                    []string
	HealthPort                  int
}

var corefile = template.Must(template.New("Corefile").Parse(`.:53 {
    bind {{.IP}}
    errors
    health {{.IP}}:{{.HealthPort}}
    kubernetes {{.Domain}} in-addr.arpa ip6.arpa {
        kubeconfig {{.Kubeconfig}}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }
{{- if .Upstream}}
    forward .{{range .Upstream}} {{.}}{{end}}
{{- end}}
    cache 30
    loop
    skiff_log
    import {{.Dir}}/*.override
}
import {{.Dir}}/*.server
`))

// Corefile renders the node's Corefile.
func Corefile(p CorefileParams) ([]byte, error) {
	if p.HealthPort == 0 {
		p.HealthPort = HealthPort
	}
	var b bytes.Buffer
	err := corefile.Execute(&b, p)
	return b.Bytes(), err
}
