package multinode

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/skiff-dev/skiff/tests/cluster"
)

// TestIngressFromEitherNode: an Ingress answers on every node's address,
// and a request to one node reaches a pod that runs on another.
func TestIngressFromEitherNode(t *testing.T) {
	ns := srv.Namespace(t)
	for _, b := range []struct{ name, node string }{{"on-server", nodes[0]}, {"on-agent", nodes[1]}} {
		pod(t, ns, b.name, b.node, "app: "+b.name, "tool", "serve", "-port", "8080")
		srv.KubectlT(t, fmt.Sprintf(`
apiVersion: v1
kind: Service
metadata: {name: %[1]s}
spec:
  selector: {app: %[1]s}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: %[1]s}
spec:
  rules:
  - host: %[1]s.example.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: %[1]s, port: {number: 80}}}}
`, b.name), "apply", "-n", ns, "-f", "-")
		srv.WaitReadyEndpoints(t, ns, b.name, 1)
	}
	for _, c := range []struct{ via, backend string }{
		{lan.Hosts[0].IP, "on-agent"}, // the server's node, to a pod on agent-1
		{lan.Hosts[1].IP, "on-server"},
		{lan.Hosts[2].IP, "on-server"}, // a node that runs neither pod
	} {
		cluster.WaitFor(t, fmt.Sprintf("%s through %s", c.backend, c.via), func(ctx context.Context) (bool, error) {
			body, err := hostGet(ctx, "http://"+c.via+"/", c.backend+".example.test")
			return err == nil && strings.HasPrefix(body, "host="+c.backend+" "), nil
		})
	}
}

// hostGet sends a GET to url with the given Host header (that of url
// when empty) and returns the body.
func hostGet(ctx context.Context, url, host string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	req.Host = host
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return string(body), err
}
