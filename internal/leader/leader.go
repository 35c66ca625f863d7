// Package leader runs work on one server at a time: with an external
// datastore several servers share one cluster, and some work (the metrics
// API's registration, Helm releases) must have a single owner. It is
// client-go's leader election on a Lease in kube-system.
package leader

import (
	"context"
	"os"
	"strconv"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// Namespace holds the Leases.
const Namespace = "kube-system"

// Identity names this process among the servers: host, address and pid.
func Identity(address string) string {
	host, _ := os.Hostname()
	return host + "_" + address + "_" + strconv.Itoa(os.Getpid())
}

// Run runs work while this process holds the Lease named lease, and again
// each time it gets it back, until ctx ends or work fails while leading.
func Run(ctx context.Context, cs kubernetes.Interface, lease, identity string, work func(context.Context) error) error {
	lock, err := resourcelock.New(resourcelock.LeasesResourceLock, Namespace, lease, cs.CoreV1(), cs.CoordinationV1(),
		resourcelock.ResourceLockConfig{Identity: identity})
	if err != nil {
		return err
	}
	failed := make(chan error, 1)
	for ctx.Err() == nil {
		leaderelection.RunOrDie(ctx, leaderelection.LeaderElectionConfig{
			Lock: lock, LeaseDuration: 15 * time.Second, RenewDeadline: 10 * time.Second, RetryPeriod: 2 * time.Second,
			ReleaseOnCancel: true, Name: lease,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(ctx context.Context) {
					if err := work(ctx); err != nil && ctx.Err() == nil {
						failed <- err
					}
				},
				OnStoppedLeading: func() {},
			},
		})
		select {
		case err := <-failed:
			return err
		default:
		}
	}
	return nil
}
