package budgetstore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/connectops/finch-operator/internal/budget"
	"github.com/connectops/finch-operator/internal/finch"
	"github.com/connectops/finch-operator/internal/testenv"
)

// k8s talks to the envtest API server shared by the tests.
var k8s client.Client

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	env, err := testenv.New()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cfg, err := testenv.Start(env)
	if err != nil {
		fmt.Fprintln(os.Stderr, "start envtest:", err)
		return 1
	}
	defer func() { _ = env.Stop() }()
	cfg.QPS, cfg.Burst = 200, 400
	if k8s, err = client.New(cfg, client.Options{Scheme: testenv.Scheme}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// countingClient counts the writes that reach the API server.
type countingClient struct {
	client.Client
	writes, conflicts atomic.Int64
}

func (c *countingClient) Create(ctx context.Context, obj client.Object, opts ...client.CreateOption) error {
	c.writes.Add(1)
	return c.Client.Create(ctx, obj, opts...)
}

func (c *countingClient) Update(ctx context.Context, obj client.Object, opts ...client.UpdateOption) error {
	c.writes.Add(1)
	err := c.Client.Update(ctx, obj, opts...)
	if err != nil {
		c.conflicts.Add(1)
	}
	return err
}

var nsSeq atomic.Int64

// namespace creates a namespace for one test.
func namespace(t *testing.T) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "budget-" + strconv.FormatInt(nsSeq.Add(1), 10) + "-" + strconv.FormatInt(time.Now().UnixNano()%1e6, 10)}}
	if err := k8s.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	return ns.Name
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestJournalRoundTrip(t *testing.T) {
	ctx := ctxFor(t, 30*time.Second)
	ns := namespace(t)
	app := types.NamespacedName{Namespace: ns, Name: "acme"}

	// Any object will do as owner: envtest runs no garbage collector.
	owner := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "owner"}}
	if err := k8s.Create(ctx, owner); err != nil {
		t.Fatal(err)
	}
	ref := metav1.NewControllerRef(owner, corev1.SchemeGroupVersion.WithKind("ConfigMap"))
	j := New(k8s, app, Options{Reader: k8s, Owner: ref})

	got, err := j.Load(ctx)
	if err != nil || len(got) != 0 {
		t.Fatalf("Load before any write = %v, %v; want none", got, err)
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 600_700_800, time.UTC)
	want := budget.Claim{ID: "a.1", At: at, Until: at.Add(30 * time.Second), Slots: 5}
	if err := j.Update(ctx, func(cur map[string][]budget.Claim) (map[string][]budget.Claim, error) {
		if len(cur) != 0 {
			t.Errorf("Update saw %v, want none", cur)
		}
		return map[string][]budget.Claim{finch.EndpointIntrospect: {want}}, nil
	}); err != nil {
		t.Fatal(err)
	}

	cm := &corev1.ConfigMap{}
	if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "acme-finch-budget"}, cm); err != nil {
		t.Fatal(err)
	}
	if cm.Labels[ManagedByLabel] != ManagedBy {
		t.Errorf("labels = %v", cm.Labels)
	}
	if len(cm.OwnerReferences) != 1 || cm.OwnerReferences[0].UID != owner.UID {
		t.Errorf("owner references = %+v", cm.OwnerReferences)
	}
	t.Logf("%s = %s (%d bytes)", DataKey, cm.Data[DataKey], len(cm.Data[DataKey]))

	// Another process reads it back, rounded outwards to milliseconds.
	got, err = New(k8s, app, Options{}).Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cs := got[finch.EndpointIntrospect]
	if len(cs) != 1 || cs[0].ID != want.ID || cs[0].Slots != 5 ||
		!cs[0].At.Equal(at.Truncate(time.Millisecond)) || !cs[0].Until.Equal(want.Until.Truncate(time.Millisecond).Add(time.Millisecond)) {
		t.Errorf("Load = %+v, want %+v rounded outwards", cs, want)
	}

	// fn returning nil writes nothing; fn's error comes back as is.
	rv := cm.ResourceVersion
	if err := j.Update(ctx, func(map[string][]budget.Claim) (map[string][]budget.Claim, error) { return nil, nil }); err != nil {
		t.Fatal(err)
	}
	errFull := errors.New("full")
	if err := j.Update(ctx, func(map[string][]budget.Claim) (map[string][]budget.Claim, error) { return nil, errFull }); !errors.Is(err, errFull) {
		t.Errorf("Update = %v, want fn's error", err)
	}
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(cm), cm); err != nil || cm.ResourceVersion != rv {
		t.Errorf("ConfigMap written by a no-op Update (rv %s -> %s, %v)", rv, cm.ResourceVersion, err)
	}
}

// TestJournalConcurrentWritersLoseNothing: Journals with their own caches
// (processes) append concurrently; resourceVersion conflicts are retried, so
// every claim is kept.
func TestJournalConcurrentWritersLoseNothing(t *testing.T) {
	ctx := ctxFor(t, 60*time.Second)
	app := types.NamespacedName{Namespace: namespace(t), Name: "acme"}
	cc := &countingClient{Client: k8s}
	const writers, each = 3, 8
	var wg sync.WaitGroup
	for w := range writers {
		j := New(cc, app, Options{Reader: k8s})
		wg.Go(func() {
			for i := range each {
				id := fmt.Sprintf("w%d.%d", w, i)
				err := j.Update(ctx, func(cur map[string][]budget.Claim) (map[string][]budget.Claim, error) {
					next := map[string][]budget.Claim{}
					for ep, cs := range cur {
						next[ep] = append([]budget.Claim(nil), cs...)
					}
					now := time.Now()
					next[finch.EndpointToken] = append(next[finch.EndpointToken], budget.Claim{ID: id, At: now, Until: now, Slots: 1})
					return next, nil
				})
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	got, err := New(k8s, app, Options{}).Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(got[finch.EndpointToken]); n != writers*each {
		t.Errorf("%d claims recorded, want %d", n, writers*each)
	}
	t.Logf("%d writes for %d claims (%d conflicts retried)", cc.writes.Load(), writers*each, cc.conflicts.Load())
}

func TestJournalCorruptDataIsAnError(t *testing.T) {
	ctx := ctxFor(t, 30*time.Second)
	app := types.NamespacedName{Namespace: namespace(t), Name: "acme"}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: app.Namespace, Name: LegacyConfigMapName(app.Name)}, Data: map[string]string{DataKey: "{not json"}}
	if err := k8s.Create(ctx, cm); err != nil {
		t.Fatal(err)
	}
	if _, err := New(k8s, app, Options{}).Load(ctx); err == nil {
		t.Fatal("Load of corrupt claims succeeded: it must not read as an empty budget")
	}
	b := budget.New(budget.Config{Requests: 5, Window: time.Minute})
	_ = b.AttachJournal(ctx, New(k8s, app, Options{}))
	short := ctxFor(t, 300*time.Millisecond)
	if err := b.Wait(short, finch.EndpointToken); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait over a corrupt journal = %v, want no slot (DeadlineExceeded)", err)
	}
}

// TestBudgetsShareConfigMap: two managers (split brain), then a third one
// started after both, spend one app's budget through the ConfigMap; all the
// slots are in one window, so together they may have at most Requests.
func TestBudgetsShareConfigMap(t *testing.T) {
	const n, w = 10, 20 * time.Second // nothing leaves the window during the test
	ctx := ctxFor(t, 60*time.Second)
	app := types.NamespacedName{Namespace: namespace(t), Name: "acme"}
	cfg := budget.Config{Requests: n, Window: w}
	var got atomic.Int64
	spend := func(ctx context.Context, b *budget.Budget) *sync.WaitGroup {
		var wg sync.WaitGroup
		for range 3 {
			wg.Go(func() {
				for b.Wait(ctx, finch.EndpointCreateSession) == nil {
					got.Add(1)
				}
			})
		}
		return &wg
	}
	leaders := make([]*budget.Budget, 2)
	for i := range leaders {
		leaders[i] = budget.New(cfg)
		if err := leaders[i].AttachJournal(ctx, New(k8s, app, Options{Reader: k8s})); err != nil {
			t.Fatal(err)
		}
	}
	// Both spend until the budget has been exhausted for a while.
	spendCtx, stop := context.WithTimeout(ctx, 3*time.Second)
	a, b := spend(spendCtx, leaders[0]), spend(spendCtx, leaders[1])
	a.Wait()
	b.Wait()
	stop()
	split := got.Load()
	if split > n {
		t.Errorf("two budgets sharing the ConfigMap started %d requests in one window, want <= %d", split, n)
	}
	if split < n/2 {
		t.Errorf("two budgets got only %d of %d slots in 3s", split, n)
	}

	// A new leader after a restart: it may spend what is left, never more.
	next := budget.New(cfg)
	if err := next.AttachJournal(ctx, New(k8s, app, Options{Reader: k8s})); err != nil {
		t.Fatal(err)
	}
	spendCtx, stop = context.WithTimeout(ctx, time.Second)
	defer stop()
	spend(spendCtx, next).Wait()
	if total := got.Load(); total > n {
		t.Errorf("%d requests in one window across the restart, want <= %d", total, n)
	}
	if d := next.Delay(finch.EndpointCreateSession); d < w/2 {
		t.Errorf("new leader's Delay = %s with the window spent, want about %s", d, w)
	}
	t.Logf("split brain: %d slots; after restart: %d more (limit %d)", split, got.Load()-split, n)
}

// TestConfigMapWritesPerWindow measures what one window of full-rate
// spending on one endpoint costs in ConfigMap writes.
func TestConfigMapWritesPerWindow(t *testing.T) {
	const n, w, windows = 20, time.Second, 3
	ctx := ctxFor(t, 60*time.Second)
	app := types.NamespacedName{Namespace: namespace(t), Name: "acme"}
	cc := &countingClient{Client: k8s}
	b := budget.New(budget.Config{Requests: n, Window: w})
	if err := b.AttachJournal(ctx, New(cc, app, Options{Reader: k8s})); err != nil {
		t.Fatal(err)
	}
	var slots atomic.Int64
	spendCtx, stop := context.WithTimeout(ctx, windows*w)
	defer stop()
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for b.Wait(spendCtx, finch.EndpointIntrospect) == nil {
				slots.Add(1)
			}
		})
	}
	wg.Wait()
	writes := cc.writes.Load()
	perWindow := float64(writes) / windows
	cm := &corev1.ConfigMap{}
	if err := k8s.Get(ctx, New(k8s, app, Options{}).Key(), cm); err != nil {
		t.Fatal(err)
	}
	msg := fmt.Sprintf("full-rate spending (%d per %s, chunk %d): %d slots, %d ConfigMap writes in %d windows = %.1f writes per window; ConfigMap data %d bytes",
		n, w, (n+3)/4, slots.Load(), writes, windows, perWindow, len(cm.Data[DataKey]))
	t.Log(msg)
	fmt.Println(msg)
	if slots.Load() > int64(windows+1)*n {
		t.Errorf("%d slots in %d windows of %d", slots.Load(), windows, n)
	}
	if perWindow > 2*float64((n+3)/4)+1 {
		t.Errorf("%.1f writes per window, want about %d", perWindow, (n+3)/4)
	}
}

// TestImportLegacyJournal: an application's journal takes the live claims of
// an app's journal from before budgets were per Finch application, once; a
// Budget on the new journal then counts them.
func TestImportLegacyJournal(t *testing.T) {
	ctx := ctxFor(t, 30*time.Second)
	ns := namespace(t)
	now := time.Now()
	legacy := New(k8s, types.NamespacedName{Namespace: ns, Name: "acme"}, Options{})
	if err := legacy.Update(ctx, func(map[string][]budget.Claim) (map[string][]budget.Claim, error) {
		return map[string][]budget.Claim{finch.EndpointCreateSession: {
			{ID: "old.1", At: now.Add(-10 * time.Minute), Until: now.Add(-9 * time.Minute), Slots: 5}, // long gone
			{ID: "old.2", At: now.Add(-time.Second), Until: now.Add(29 * time.Second), Slots: 5},
		}}, nil
	}); err != nil {
		t.Fatal(err)
	}
	key := types.NamespacedName{Namespace: ns, Name: ApplicationConfigMapName("0123456789abcdef")}
	j := New(k8s, key, Options{Name: key.Name, Labels: map[string]string{ApplicationLabel: "0123456789abcdef"}})
	for i, want := range []int{1, 0} { // the second import finds it already there
		n, err := j.Import(ctx, legacy.Key(), now.Add(-2*time.Minute))
		if err != nil || n != want {
			t.Fatalf("import %d = %d, %v; want %d", i, n, err, want)
		}
	}
	if n, err := j.Import(ctx, types.NamespacedName{Namespace: ns, Name: "no-such-finch-budget"}, now); err != nil || n != 0 {
		t.Fatalf("import of a missing ConfigMap = %d, %v", n, err)
	}
	cm := &corev1.ConfigMap{}
	if err := k8s.Get(ctx, key, cm); err != nil {
		t.Fatal(err)
	}
	if cm.Labels[ApplicationLabel] != "0123456789abcdef" || cm.Labels[ManagedByLabel] != ManagedBy {
		t.Errorf("labels = %v", cm.Labels)
	}
	got, err := j.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if cs := got[finch.EndpointCreateSession]; len(cs) != 1 || cs[0].ID != "old.2" {
		t.Fatalf("claims after import = %+v, want old.2 only", got)
	}

	// A Budget of 5 per window on the new journal finds the window full.
	b := budget.New(budget.Config{Requests: 5, Window: time.Minute})
	if err := b.AttachJournal(ctx, j); err != nil {
		t.Fatal(err)
	}
	if d := b.Delay(finch.EndpointCreateSession); d < time.Minute {
		t.Errorf("Delay = %s; the imported claim holds the window for a minute after its Until", d)
	}
}
