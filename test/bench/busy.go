package main

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// busyConfig is the unrelated load a real cluster carries around the
// operator: Secrets and ConfigMaps of other workloads, spread over namespaces.
type busyConfig struct {
	secrets, configMaps, namespaces, bytes int
}

func (c *busyConfig) bindFlags() {
	flag.IntVar(&c.secrets, "busy-secrets", 20000, "unrelated Secrets in the cluster before phase A (0: none)")
	flag.IntVar(&c.configMaps, "busy-configmaps", 20000, "unrelated ConfigMaps in the cluster before phase A")
	flag.IntVar(&c.namespaces, "busy-namespaces", 200, "namespaces the unrelated objects are spread over")
	flag.IntVar(&c.bytes, "busy-bytes", 2048, "data bytes per unrelated Secret and ConfigMap")
}

// busy fills the cluster with unrelated Secrets and ConfigMaps while the
// operator runs, and reports what they cost it: memory per unrelated Secret
// and API reads. The memory baseline of phase A is taken after it, so the
// per-connection figures do not include them.
func (b *benchRun) busy(ctx context.Context) error {
	c := b.busyConfig
	if c.secrets+c.configMaps == 0 {
		return nil
	}
	logf("busy cluster: %d Secrets and %d ConfigMaps (%d B each) in %d namespaces", c.secrets, c.configMaps, c.bytes, c.namespaces)
	s, err := b.mark(ctx, b.simA)
	if err != nil {
		return err
	}
	nss := make([]string, max(c.namespaces, 1))
	for i := range nss {
		nss[i] = fmt.Sprintf("busy-%03d", i)
		if err := b.namespace(ctx, nss[i]); err != nil {
			return err
		}
	}
	payload := strings.Repeat("x", c.bytes)
	idx := make([]int, max(c.secrets, c.configMaps))
	for i := range idx {
		idx[i] = i
	}
	if err := parallel(ctx, b.workers, idx, func(i int) error {
		ns, name := nss[i%len(nss)], fmt.Sprintf("workload-%05d", i)
		// Labels and annotations like a Helm release's, so the metadata the
		// operator might keep is realistic.
		meta := metav1.ObjectMeta{Name: name, Namespace: ns,
			Labels:      map[string]string{"app.kubernetes.io/name": "workload", "app.kubernetes.io/instance": name, "app.kubernetes.io/managed-by": "Helm"},
			Annotations: map[string]string{"meta.helm.sh/release-name": name, "meta.helm.sh/release-namespace": ns}}
		if i < c.secrets {
			sec := &corev1.Secret{ObjectMeta: meta, Type: corev1.SecretTypeOpaque, StringData: map[string]string{"password": payload}}
			if err := b.c.Create(ctx, sec); err != nil {
				return fmt.Errorf("create Secret %s/%s: %w", ns, name, err)
			}
		}
		if i < c.configMaps {
			cm := &corev1.ConfigMap{ObjectMeta: meta, Data: map[string]string{"config.yaml": payload}}
			if err := b.c.Create(ctx, cm); err != nil {
				return fmt.Errorf("create ConfigMap %s/%s: %w", ns, name, err)
			}
		}
		return nil
	}); err != nil {
		return err
	}
	created := secs(time.Since(s.at))
	q, err := waitQuiet(ctx, b.op, 2*time.Second, 2*time.Minute)
	if err != nil {
		return err
	}
	reqs := diff(apiRequests(q), apiRequests(s.metrics))
	r := b.rep
	r.add("busy cluster", "unrelated objects created (bench client)", fmt.Sprintf("%d Secrets, %d ConfigMaps in %d namespaces: %s", c.secrets, c.configMaps, len(nss), created))
	reads := reqs["GET"] + reqs["LIST"]
	r.goal("busy cluster", "API reads by the manager caused by them", fmt.Sprint(mapInts(reqs)), "0 reads after the initial list", reads == 0)
	if b.skip["memory"] {
		return nil
	}
	logf("busy cluster: memory (waiting up to %v for a GC cycle)", b.gcWait)
	after, err := memoryAfterGC(ctx, b.op, q, b.gcWait)
	if err != nil {
		return err
	}
	if c.secrets > 0 {
		n := float64(c.secrets)
		heapPer := (after.heapInuse - b.base.heapInuse) / n
		r.goal("busy cluster", "heap in use per unrelated Secret", kib(heapPer), "<= 0.5 KiB", heapPer <= 512)
		if b.op.PID() != 0 {
			r.add("busy cluster", "RSS per unrelated Secret", kib(float64(after.rss-b.base.rss)/n))
		}
	}
	// Phase A's per-connection memory is measured from here.
	b.base = after
	return nil
}
