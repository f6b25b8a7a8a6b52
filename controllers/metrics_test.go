package controllers

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
)

// gaugeSeries reads vec as "label=value,..." -> value, for the series whose
// namespace label starts with nsPrefix (the test's own).
func gaugeSeries(t *testing.T, vec *prometheus.GaugeVec, nsPrefix string) map[string]float64 {
	t.Helper()
	ch := make(chan prometheus.Metric, 1024)
	go func() { vec.Collect(ch); close(ch) }()
	out := map[string]float64{}
	for pm := range ch {
		m := &dto.Metric{}
		if err := pm.Write(m); err != nil {
			t.Fatal(err)
		}
		var ls []string
		mine := false
		for _, lp := range m.GetLabel() {
			ls = append(ls, lp.GetName()+"="+lp.GetValue())
			mine = mine || lp.GetName() == "namespace" && strings.HasPrefix(lp.GetValue(), nsPrefix)
		}
		if mine {
			out[strings.Join(ls, ",")] = m.GetGauge().GetValue()
		}
	}
	return out
}

// trackedConnection is a connection as the controller's last status write
// left it: phase, and the ReauthRequired condition (True since since, when
// since is not zero).
func trackedConnection(ns, name string, app *finchv1.AppReference, phase finchv1.Phase, since time.Time) *finchv1.FinchConnection {
	c := &finchv1.FinchConnection{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	c.Spec.AppRef = app
	c.Status.Phase = phase
	cond := metav1.Condition{Type: finchv1.ConditionReauthRequired, Status: metav1.ConditionFalse, Reason: "NotRequired"}
	if !since.IsZero() {
		cond = metav1.Condition{Type: finchv1.ConditionReauthRequired, Status: metav1.ConditionTrue, Reason: "FinchReauth", LastTransitionTime: metav1.Time{Time: since}}
	}
	c.Status.Conditions = []metav1.Condition{cond}
	return c
}

// The gauges are per namespace and app (never per connection); the oldest
// reauthentication wait is the waiting connection's own start, so one
// employer replacing another does not add up to a long wait, and a
// restarted manager (a new tracker fed the same statuses) reports the same.
func TestConnectionGauges(t *testing.T) {
	const ns, hr = "gauges-payroll", "gauges-hr"
	shared := &finchv1.AppReference{Kind: finchv1.ClusterFinchAppKind, Name: "shared"}
	t0 := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	var tr connectionTracker
	tr.set(trackedConnection(ns, "acme", nil, finchv1.PhaseReauthRequired, t0))
	tr.set(trackedConnection(ns, "globex", nil, finchv1.PhaseConnected, time.Time{}))
	tr.set(trackedConnection(ns, "initech", shared, finchv1.PhaseReauthRequired, t0.Add(day)))
	tr.set(trackedConnection(hr, "umbrella", nil, finchv1.PhaseAwaitingConnect, time.Time{}))

	want := func(what string, vec *prometheus.GaugeVec, exp map[string]float64) {
		t.Helper()
		got := gaugeSeries(t, vec, "gauges-")
		if len(got) != len(exp) {
			t.Errorf("%s: got %v, want %v", what, got, exp)
			return
		}
		for k, v := range exp {
			if g, ok := got[k]; !ok || g != v {
				t.Errorf("%s: got %v, want %v", what, got, exp)
				return
			}
		}
	}
	want("finch_connections", connectionsByPhase, map[string]float64{
		"app=FinchApp/default,namespace=gauges-payroll,phase=ReauthRequired":       1,
		"app=FinchApp/default,namespace=gauges-payroll,phase=Connected":            1,
		"app=ClusterFinchApp/shared,namespace=gauges-payroll,phase=ReauthRequired": 1,
		"app=FinchApp/default,namespace=gauges-hr,phase=AwaitingConnect":           1,
	})
	want("oldest wait", reauthOldestPending, map[string]float64{
		"app=FinchApp/default,namespace=gauges-payroll":       float64(t0.Unix()),
		"app=ClusterFinchApp/shared,namespace=gauges-payroll": float64(t0.Add(day).Unix()),
	})

	// The counters of a pair are exported at zero from its first connection
	// (increase() then sees the first event).
	ch := make(chan prometheus.Metric, 64)
	go func() { sessionsExpired.Collect(ch); close(ch) }()
	initialised := false
	for pm := range ch {
		m := &dto.Metric{}
		if err := pm.Write(m); err != nil {
			t.Fatal(err)
		}
		lv := map[string]string{}
		for _, lp := range m.GetLabel() {
			lv[lp.GetName()] = lp.GetValue()
		}
		initialised = initialised || lv["namespace"] == hr && lv["app"] == "FinchApp/default" && m.GetCounter().GetValue() == 0
	}
	if !initialised {
		t.Error("finch_sessions_expired_total{namespace=gauges-hr,app=FinchApp/default} is not exported at 0")
	}

	// Two days later acme re-authenticates and globex starts waiting: the
	// namespace and app has waited four days in a row, but no employer more
	// than the two days of acme.
	tr.set(trackedConnection(ns, "acme", nil, finchv1.PhaseConnected, time.Time{}))
	tr.set(trackedConnection(ns, "globex", nil, finchv1.PhaseReauthRequired, t0.Add(2*day)))
	want("oldest wait after acme re-authenticated", reauthOldestPending, map[string]float64{
		"app=FinchApp/default,namespace=gauges-payroll":       float64(t0.Add(2 * day).Unix()),
		"app=ClusterFinchApp/shared,namespace=gauges-payroll": float64(t0.Add(day).Unix()),
	})

	// A restarted manager reads the same statuses and reports the same wait.
	var restarted connectionTracker
	for _, c := range []*finchv1.FinchConnection{
		trackedConnection(ns, "globex", nil, finchv1.PhaseReauthRequired, t0.Add(2*day)),
	} {
		restarted.set(c)
	}
	if got := gaugeSeries(t, reauthOldestPending, "gauges-payroll")["app=FinchApp/default,namespace=gauges-payroll"]; got != float64(t0.Add(2*day).Unix()) {
		t.Errorf("after a restart the oldest wait is %v, want %v", got, t0.Add(2*day).Unix())
	}

	// Deleted connections leave no series behind.
	for _, c := range []string{"acme", "globex", "initech"} {
		tr.forget(types.NamespacedName{Namespace: ns, Name: c})
		restarted.forget(types.NamespacedName{Namespace: ns, Name: c})
	}
	tr.forget(types.NamespacedName{Namespace: hr, Name: "umbrella"})
	want("finch_connections after deletes", connectionsByPhase, map[string]float64{})
	want("oldest wait after deletes", reauthOldestPending, map[string]float64{})
}
