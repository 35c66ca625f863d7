package kubelet

import (
	"context"
	"net/http"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/record"
	nodeutil "k8s.io/component-helpers/node/util"
	"k8s.io/klog/v2"
	"k8s.io/kubernetes/cmd/kubelet/app/options"
	kubeletpkg "k8s.io/kubernetes/pkg/kubelet"
	podconfig "k8s.io/kubernetes/pkg/kubelet/config"
	kubetypes "k8s.io/kubernetes/pkg/kubelet/types"
	kubeletutil "k8s.io/kubernetes/pkg/kubelet/util"
)

// nodeSyncPeriod is how often the API server pod source checks, before it
// starts, whether the kubelet's node lister holds the Node.
const nodeSyncPeriod = 20 * time.Millisecond

// podSources gives the kubelet its pod sources (Dependencies.PodConfig),
// the three upstream's NewMainKubelet would make, from upstream's own
// constructors: the static pod directory, the static pod URL and the API
// server. The one difference is when the API server source starts.
// Upstream starts it from a goroutine that checks once a second
// (pkg/kubelet/config, WaitForAPIServerSyncPeriod) whether the kubelet's
// node lister holds the Node; its first check comes a millisecond after
// that lister's informer starts, so it always fails, and every kubelet start
// waited a whole second before it saw its first pod. Here the same check
// (Kubelet.GetNode reads that lister) is made every nodeSyncPeriod, once
// the kubelet exists (a Dependencies.Options function, which NewMainKubelet
// calls once the lister's informer has started).
//
// The sources are registered here, before the kubelet starts, so that it
// knows from the start which sources it must hear from before it cleans up
// pods; they start sending from the Options function, when the kubelet's
// event recorder (set by upstream after this runs) is there for them.
func podSources(ctx context.Context, s *options.KubeletServer, deps *kubeletpkg.Dependencies) error {
	hostname, err := nodeutil.GetHostname(s.HostnameOverride)
	if err != nil {
		return err
	}
	nodeName := types.NodeName(hostname)
	if deps.PodStartupLatencyTracker == nil {
		deps.PodStartupLatencyTracker = kubeletutil.NewPodStartupLatencyTracker()
	}
	recorder := &deferredRecorder{}
	cfg := podconfig.NewPodConfig(recorder, deps.PodStartupLatencyTracker)
	var start []func(klog.Logger)
	if s.StaticPodPath != "" {
		ch := cfg.Channel(ctx, kubetypes.FileSource)
		start = append(start, func(logger klog.Logger) {
			logger.Info("Adding static pod path", "path", s.StaticPodPath)
			podconfig.NewSourceFile(logger, s.StaticPodPath, nodeName, s.FileCheckFrequency.Duration, ch)
		})
	}
	if s.StaticPodURL != "" {
		ch := cfg.Channel(ctx, kubetypes.HTTPSource)
		start = append(start, func(logger klog.Logger) {
			header := make(http.Header)
			for k, v := range s.StaticPodURLHeader {
				for _, value := range v {
					header.Add(k, value)
				}
			}
			logger.Info("Adding pod URL with HTTP header", "URL", s.StaticPodURL, "header", header)
			podconfig.NewSourceURL(logger, s.StaticPodURL, header, nodeName, s.HTTPCheckFrequency.Duration, ch)
		})
	}
	api := cfg.Channel(ctx, kubetypes.ApiserverSource)
	deps.PodConfig = cfg
	deps.Options = append(deps.Options, func(k *kubeletpkg.Kubelet) {
		logger := klog.FromContext(ctx)
		rec := deps.Recorder
		recorder.target.Store(&rec)
		for _, f := range start {
			f(logger)
		}
		client := deps.KubeClient
		if client == nil {
			return // standalone: no API server
		}
		logger.Info("Adding apiserver pod source")
		go func() {
			err := wait.PollUntilContextCancel(ctx, nodeSyncPeriod, true, func(ctx context.Context) (bool, error) {
				_, err := k.GetNode(ctx)
				return err == nil, nil
			})
			if err != nil {
				return // the kubelet ends with the process
			}
			podconfig.NewSourceApiserver(logger, client, nodeName, func() bool { return true }, api)
		}()
	})
	return nil
}

// deferredRecorder passes the pod sources' events on to the kubelet's
// recorder, which upstream makes after podSources has made the pod config.
// Nothing is recorded before the sources start, and they start once the
// recorder is there.
type deferredRecorder struct {
	target atomic.Pointer[record.EventRecorderLogger]
}

func (r *deferredRecorder) get() record.EventRecorderLogger {
	if p := r.target.Load(); p != nil && *p != nil {
		return *p
	}
	return nil
}

func (r *deferredRecorder) Event(object runtime.Object, eventtype, reason, message string) {
	if rec := r.get(); rec != nil {
		rec.Event(object, eventtype, reason, message)
	}
}

func (r *deferredRecorder) Eventf(object runtime.Object, eventtype, reason, messageFmt string, args ...interface{}) {
	if rec := r.get(); rec != nil {
		rec.Eventf(object, eventtype, reason, messageFmt, args...)
	}
}

func (r *deferredRecorder) AnnotatedEventf(object runtime.Object, annotations map[string]string, eventtype, reason, messageFmt string, args ...interface{}) {
	if rec := r.get(); rec != nil {
		rec.AnnotatedEventf(object, annotations, eventtype, reason, messageFmt, args...)
	}
}

func (r *deferredRecorder) WithLogger(logger klog.Logger) record.EventRecorderLogger {
	if rec := r.get(); rec != nil {
		return rec.WithLogger(logger)
	}
	return r
}
