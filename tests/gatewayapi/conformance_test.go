// Package gatewayapi runs the Gateway API's own conformance suite
// (sigs.k8s.io/gateway-api/conformance, the version of the CRDs the server
// applies), profile GATEWAY-HTTP, against one `skiff server` node.
//
// The suite's Gateways all listen on ports 80 and 443 without hostnames,
// so they need addresses of their own: the server gets a
// --gateway-address-pool of loopback addresses, which are the node's (it
// runs in the host's network namespace) and reach the suite, run by this
// test on the same host. Its backends run echo-basic built here from the
// suite's module, under the image names its manifests give.
package gatewayapi

import (
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
	"sigs.k8s.io/gateway-api/conformance"
	confv1 "sigs.k8s.io/gateway-api/conformance/apis/v1"
	conftests "sigs.k8s.io/gateway-api/conformance/tests"
	"sigs.k8s.io/gateway-api/conformance/utils/config"
	"sigs.k8s.io/gateway-api/conformance/utils/suite"
	"sigs.k8s.io/gateway-api/pkg/features"
	"sigs.k8s.io/yaml"

	"github.com/skiff-dev/skiff/internal/ingress"
	"github.com/skiff-dev/skiff/internal/ociimage"
	"github.com/skiff-dev/skiff/tests/cluster"
)

// report, when set, is where the suite's ConformanceReport is written
// (tests/gatewayapi/report.yaml is the one kept in the repository).
var report = flag.String("report", "", "write the ConformanceReport to this file")

// features, when set, adds these features' tests (comma-separated
// conformance names), to find which the node passes before its
// GatewayClass claims them.
var extra = flag.String("features", "", "also run the tests of these features (comma-separated)")

// pool: the loopback addresses the node gives Gateways.
const pool = "127.77.0.0/27"

var srv *cluster.Server

func TestMain(m *testing.M) {
	os.Exit(cluster.Main(m, "gatewayapi", func(dir string) (*cluster.Server, error) {
		s, err := cluster.NewNode(dir, "--gateway-address-pool", pool,
			"--ingress-http-port", strconv.Itoa(cluster.FreePort()), "--ingress-https-port", strconv.Itoa(cluster.FreePort()))
		if err != nil {
			return nil, err
		}
		srv = s
		return s, writeImages(dir, filepath.Join(s.DataDir, "agent", "images"))
	}))
}

// writeImages puts the suite's images into the node's air-gap folder:
// echo-basic under each name the manifests use, and, for the DNS server
// its UDP tests query (not part of GATEWAY-HTTP, but deployed with the
// base manifests, which must become ready), a busybox that only sleeps.
func writeImages(dir, images string) error {
	bin := filepath.Join(dir, "echo-basic")
	cmd := exec.Command("go", "build", "-o", bin, "sigs.k8s.io/gateway-api/conformance/echo-basic")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("building echo-basic: %v: %s", err, out)
	}
	echo, err := os.ReadFile(bin)
	if err != nil {
		return err
	}
	for i, tag := range []string{"v1.5.1", "v1.6.0-dev.2", "v1.6.0-dev.3"} {
		if err := writeImage(filepath.Join(images, "echo-basic-"+strconv.Itoa(i)+".tar"), ociimage.Image{
			Name:       "registry.k8s.io/gateway-api/echo-basic:" + tag,
			Files:      []ociimage.File{{Path: "echo-basic", Mode: 0o755, Data: echo}},
			Entrypoint: []string{"/echo-basic"},
		}); err != nil {
			return err
		}
	}
	busybox, err := os.ReadFile("/bin/busybox")
	if err != nil {
		return err
	}
	return writeImage(filepath.Join(images, "coredns.tar"), ociimage.Image{
		Name: "registry.k8s.io/coredns/coredns:v1.12.2",
		Files: []ociimage.File{{Path: "bin/busybox", Mode: 0o755, Data: busybox},
			{Path: "bin/sh", Link: "busybox"}, {Path: "bin/sleep", Link: "busybox"}},
		// The manifest's arguments (-conf FILE) become the script's $0 and $1.
		Entrypoint: []string{"/bin/sh", "-c", "exec sleep 2147483647"},
		Env:        []string{"PATH=/bin"},
	})
}

func writeImage(file string, img ociimage.Image) error {
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return err
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if err := ociimage.Write(f, img); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// TestConformance runs every test of the GATEWAY-HTTP profile whose
// features the node's GatewayClass claims (the core ones and the extended
// ones of ingress.Features): each must pass.
func TestConformance(t *testing.T) {
	rest, err := srv.Config()
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(rest, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, install := range []func() error{
		func() error { return gatewayv1.Install(c.Scheme()) },
		func() error { return gatewayv1beta1.Install(c.Scheme()) },
		func() error { return apiextensionsv1.AddToScheme(c.Scheme()) },
	} {
		if err := install(); err != nil {
			t.Fatal(err)
		}
	}
	var supported []features.FeatureName
	for _, f := range ingress.Features {
		supported = append(supported, features.FeatureName(f))
	}
	for _, f := range strings.Split(*extra, ",") {
		if f != "" {
			supported = append(supported, features.FeatureName(f))
		}
	}
	timeouts := config.DefaultTimeoutConfig()
	if *extra != "" {
		// A feature that fails is found without waiting out the
		// suite's eventual-consistency budget on every request.
		timeouts.MaxTimeToConsistency = 5 * time.Second
		timeouts.HTTPRouteMustHaveCondition = 15 * time.Second
		timeouts.GatewayMustHaveCondition = 15 * time.Second
		timeouts.GatewayListenersMustHaveConditions = 15 * time.Second
		timeouts.RouteMustHaveParents = 15 * time.Second
	}
	opts := suite.ConformanceOptions{
		ConfigurableOptions: suite.ConfigurableOptions{
			GatewayClassName:     "skiff",
			CleanupBaseResources: true,
			CleanupTestResources: true,
			SupportedFeatures:    supported,
			SkipProvisionalTests: true,
			TimeoutConfig:        timeouts,
			ConformanceProfiles:  []suite.ConformanceProfileName{suite.GatewayHTTPConformanceProfileName},
			// For GatewayStaticAddresses: an address of the pool, and one
			// outside it.
			UsableNetworkAddresses:   []gatewayv1.GatewaySpecAddress{{Type: ptr.To(gatewayv1.IPAddressType), Value: "127.77.0.31"}},
			UnusableNetworkAddresses: []gatewayv1.GatewaySpecAddress{{Type: ptr.To(gatewayv1.IPAddressType), Value: "192.0.2.1"}},
			Implementation: confv1.Implementation{
				Organization: "skiff-dev",
				Project:      "skiff",
				URL:          "https://github.com/skiff-dev/skiff",
				Version:      "main",
				Contact:      []string{"https://github.com/skiff-dev/skiff/issues"},
			},
		},
		Client:     c,
		Clientset:  srv.ClientT(t),
		RestConfig: rest,
		ManifestFS: []fs.FS{&conformance.Manifests},
	}
	cs, err := suite.NewConformanceTestSuite(opts)
	if err != nil {
		t.Fatal(err)
	}
	// The suite's report is ready once its test and that test's cleanups
	// have ended.
	t.Run("suite", func(t *testing.T) {
		cs.Setup(t, conftests.ConformanceTests)
		if err := cs.Run(t, conftests.ConformanceTests); err != nil {
			t.Fatal(err)
		}
	})
	r, err := cs.Report()
	if err != nil {
		t.Fatal(err)
	}
	data, err := yaml.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("conformance report:\n%s", data)
	for _, p := range r.ProfileReports {
		if p.Core.Result != confv1.Success {
			t.Errorf("profile %s: core %s (%d passed, %d failed, %d skipped)", p.Name, p.Core.Result, p.Core.Statistics.Passed, p.Core.Statistics.Failed, p.Core.Statistics.Skipped)
		}
		// The extended features the GatewayClass claims pass too.
		if e := p.Extended; e != nil && e.Result != confv1.Success {
			t.Errorf("profile %s: extended %s, failed: %v", p.Name, e.Result, e.FailedTests)
		}
	}
	if *report != "" {
		if err := os.WriteFile(*report, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
