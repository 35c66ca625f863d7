package node

import (
	"context"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/skiff-dev/skiff/tests/cluster"
)

// TestOneLog reads the node's log as a user would: every component's lines
// in klog's format with their source file and line and a logger= name,
// CoreDNS's own lines under dns, and none routed through CoreDNS's logger.
func TestOneLog(t *testing.T) {
	components := []string{"apiserver", "controller-manager", "scheduler", "kubelet", "dns", "datastore"}
	line := regexp.MustCompile(`(?m)^[IEWF]\d{4} \d\d:\d\d:\d\d\.\d{6}\s+\d+ [\w.-]+\.go:\d+\] .* logger="([\w-]+)[\w. -]*"`)
	var log string
	var missing []string
	cluster.WaitFor(t, "a line of each component in the node's log", func(context.Context) (bool, error) {
		data, err := os.ReadFile(srv.Log)
		if err != nil {
			return false, err
		}
		log, missing = string(data), slices.Clone(components)
		for _, m := range line.FindAllStringSubmatch(log, -1) {
			missing = slices.DeleteFunc(missing, func(c string) bool { return c == m[1] })
		}
		return len(missing) == 0, nil
	})
	bad := 0
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "???:1]") || strings.Contains(l, "[INFO] plugin/") || strings.HasPrefix(l, "time=") {
			if bad++; bad <= 5 {
				t.Errorf("a line without its source, or in another logger's format: %s", l)
			}
		}
	}
}
