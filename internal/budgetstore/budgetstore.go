// Package budgetstore keeps the claims of a budget.Budget in a ConfigMap, one
// per Finch application, so that a restarted manager or a new leader knows
// what the previous process spent in Finch's rolling window (see
// budget.Claim).
//
// Finch counts its limits per application, that is per client_id
// (developer.tryfinch.com/api-reference/development-guides/Rate-Limits: "A
// Finch application corresponds to a unique client_id"), so every FinchApp
// and ClusterFinchApp with the same apiURL and client_id shares one budget and
// one ConfigMap: finch-budget-<application id> (ApplicationConfigMapName) in
// the operator's cluster resource namespace, which every app can reach,
// labelled app.kubernetes.io/managed-by=finch-operator and
// finch.connectops.dev/finch-application=<id>. It has no owner (apps in
// several namespaces share it) and outlives its apps, so a re-created app
// does not get a fresh allowance. Its key claims.json holds the claims that
// still occupy a window, as compact JSON:
//
//	{"v":1,"c":{"GET /introspect":[{"i":"1f2e3d4c.7","a":1767225600000,"u":1767225630000,"n":5}]}}
//
// with times in Unix milliseconds (a rounded down, u rounded up, so rounding
// never shrinks a claim). Every write prunes the claims that no longer occupy
// any window, so it holds at most a few claims per endpoint (well under 1 KiB
// per busy endpoint).
//
// Earlier versions kept one ConfigMap per app object (<app>-finch-budget in
// the FinchApp's namespace, <app>-finch-cluster-budget for a ClusterFinchApp:
// LegacyConfigMapName, LegacyClusterConfigMapName). Import copies the claims
// still live in one of those into the application's journal, once per app
// and process start, so an upgrade does not forget what the old version just
// spent; the old ConfigMaps are no longer written and go with their apps.
//
// Write cost: a Budget writes one claim per ceil(Requests/4) slots, so an
// endpoint spending at Finch's full rate costs about 4-5 ConfigMap writes per
// window (about 5 per minute at Finch's 20 per 60 s) and an idle one none;
// reads happen only at start and after a resourceVersion conflict, because
// the last written object is kept.
package budgetstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/connectops/finch-operator/internal/budget"
)

// +kubebuilder:rbac:groups="",resources=configmaps,verbs=get;create;update

const (
	// DataKey is the ConfigMap key holding the claims.
	DataKey = "claims.json"
	// NamePrefix starts the name of an application's ConfigMap.
	NamePrefix = "finch-budget-"
	// ApplicationLabel on the ConfigMap is the application's id.
	ApplicationLabel = "finch.connectops.dev/finch-application"
	// NameSuffix was appended to a FinchApp's name to name its ConfigMap
	// (before budgets were per Finch application).
	NameSuffix = "-finch-budget"
	// ManagedByLabel and ManagedBy mark the ConfigMap as the operator's.
	ManagedByLabel = "app.kubernetes.io/managed-by"
	ManagedBy      = "finch-operator"

	formatVersion = 1
	// maxConflicts bounds the read-modify-write retries of one Update; the
	// Budget retries a failed Update later.
	maxConflicts = 10
)

// Options are the optional parts of a Journal.
type Options struct {
	// Reader reads the ConfigMap; nil reads with the Client. Pass the
	// manager's APIReader: the operator's cache does not hold ConfigMaps, and
	// a cached Get would start a cluster-wide ConfigMap informer for this.
	Reader client.Reader
	// Owner, if set, becomes the ConfigMap's owner reference (typically the
	// FinchApp, so the claims go when the app goes).
	Owner *metav1.OwnerReference
	// Name overrides the ConfigMap's name (default LegacyConfigMapName of the
	// key's name).
	Name string
	// Labels are added to the ConfigMap's labels.
	Labels map[string]string
}

// Journal is a budget.Journal stored in one ConfigMap. It is safe for
// concurrent use; give each Budget its own Journal (the same ConfigMap may be
// shared by any number of Journals, in any number of processes).
type Journal struct {
	c      client.Client
	r      client.Reader
	key    types.NamespacedName
	owner  *metav1.OwnerReference
	labels map[string]string
	mu     sync.Mutex        // serialises Load and Update: no self-inflicted conflicts
	cached *corev1.ConfigMap // last object read or written; nil: read first
}

var _ budget.Journal = (*Journal)(nil)

// New returns the Journal kept in ConfigMap key.Namespace/opts.Name
// (default: LegacyConfigMapName(key.Name)), writing with c.
func New(c client.Client, key types.NamespacedName, opts Options) *Journal {
	r := opts.Reader
	if r == nil {
		r = c
	}
	name := opts.Name
	if name == "" {
		name = LegacyConfigMapName(key.Name)
	}
	return &Journal{c: c, r: r, key: types.NamespacedName{Namespace: key.Namespace, Name: name}, owner: opts.Owner, labels: opts.Labels}
}

// ApplicationConfigMapName is the name of the budget ConfigMap of the Finch
// application with id (a short hex hash, so the name is always valid).
func ApplicationConfigMapName(id string) string { return NamePrefix + id }

// LegacyConfigMapName is the name of FinchApp app's budget ConfigMap before
// budgets were per Finch application. Names too long for the suffix are
// shortened with a hash, so every app had its own.
func LegacyConfigMapName(app string) string { return shorten(app, NameSuffix) }

// LegacyClusterConfigMapName is the name of ClusterFinchApp app's budget
// ConfigMap in the cluster resource namespace before budgets were per Finch
// application.
func LegacyClusterConfigMapName(app string) string { return shorten(app, ClusterNameSuffix) }

// ClusterNameSuffix was appended to a ClusterFinchApp's name to name its ConfigMap.
const ClusterNameSuffix = "-finch-cluster-budget"

func shorten(app, suffix string) string {
	const maxName = 253 // DNS subdomain
	if len(app)+len(suffix) <= maxName {
		return app + suffix
	}
	sum := sha256.Sum256([]byte(app))
	h := hex.EncodeToString(sum[:4])
	return app[:maxName-len(suffix)-len(h)-1] + "-" + h + suffix
}

// Key is the ConfigMap the Journal uses.
func (j *Journal) Key() types.NamespacedName { return j.key }

// Load returns the recorded claims (none if the ConfigMap does not exist).
func (j *Journal) Load(ctx context.Context) (map[string][]budget.Claim, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	cm, err := j.read(ctx)
	if err != nil {
		return nil, err
	}
	return j.decode(cm)
}

// Update implements budget.Journal: fn sees the claims of the object it
// writes, and a write that lost a resourceVersion race is computed again from
// the newer object.
func (j *Journal) Update(ctx context.Context, fn func(map[string][]budget.Claim) (map[string][]budget.Claim, error)) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	for attempt := range maxConflicts {
		cm := j.cached
		if cm == nil {
			var err error
			if cm, err = j.read(ctx); err != nil {
				return err
			}
		}
		cur, err := j.decode(cm)
		if err != nil {
			return err
		}
		next, err := fn(cur)
		if err != nil || next == nil {
			return err
		}
		data, err := encode(next)
		if err != nil {
			return fmt.Errorf("encode budget claims: %w", err)
		}
		err = j.write(ctx, cm, data)
		if err == nil {
			return nil
		}
		j.cached = nil // read again: someone else wrote, or the write's outcome is unknown
		if !apierrors.IsConflict(err) && !apierrors.IsAlreadyExists(err) && !apierrors.IsNotFound(err) {
			return fmt.Errorf("write budget ConfigMap %s: %w", j.key, err)
		}
		// Writers that lost a race wait a random, growing moment before the
		// next attempt, so the same one does not lose every time (seen with
		// three writers in lockstep on a busy machine).
		select {
		case <-ctx.Done():
			return fmt.Errorf("write budget ConfigMap %s: %w", j.key, ctx.Err())
		case <-time.After(time.Duration(rand.Int64N(int64(attempt+1) * int64(5*time.Millisecond)))):
		}
	}
	return fmt.Errorf("write budget ConfigMap %s: still conflicting after %d attempts", j.key, maxConflicts)
}

// Import copies into this journal the claims of the ConfigMap legacy (an
// older journal of the same application) whose Until is after since, unless
// a claim with the same ID is already recorded, and returns how many it
// copied. A legacy ConfigMap that does not exist, or holds nothing that
// recent, costs one read and no write. The copied claims then count like any
// other writer's until they leave the window; a Budget that already uses the
// journal learns of them with ReloadJournal.
func (j *Journal) Import(ctx context.Context, legacy types.NamespacedName, since time.Time) (int, error) {
	cm := &corev1.ConfigMap{}
	if err := j.r.Get(ctx, legacy, cm); err != nil {
		if apierrors.IsNotFound(err) {
			return 0, nil
		}
		return 0, fmt.Errorf("read legacy budget ConfigMap %s: %w", legacy, err)
	}
	old, err := decode(legacy, cm)
	if err != nil {
		return 0, err
	}
	live := map[string][]budget.Claim{}
	for ep, cs := range old {
		for _, c := range cs {
			if c.Until.After(since) {
				live[ep] = append(live[ep], c)
			}
		}
	}
	if len(live) == 0 {
		return 0, nil
	}
	var n int
	err = j.Update(ctx, func(cur map[string][]budget.Claim) (map[string][]budget.Claim, error) {
		n = 0
		seen := map[string]bool{}
		next := make(map[string][]budget.Claim, len(cur)+len(live))
		for ep, cs := range cur {
			next[ep] = append([]budget.Claim(nil), cs...)
			for _, c := range cs {
				seen[c.ID] = true
			}
		}
		for ep, cs := range live {
			for _, c := range cs {
				if !seen[c.ID] {
					next[ep] = append(next[ep], c)
					n++
				}
			}
		}
		if n == 0 {
			return nil, nil
		}
		return next, nil
	})
	if err != nil {
		return 0, fmt.Errorf("import budget claims from %s: %w", legacy, err)
	}
	return n, nil
}

// read gets the ConfigMap into the cache; nil if it does not exist.
func (j *Journal) read(ctx context.Context) (*corev1.ConfigMap, error) {
	cm := &corev1.ConfigMap{}
	if err := j.r.Get(ctx, j.key, cm); err != nil {
		if apierrors.IsNotFound(err) {
			j.cached = nil
			return nil, nil
		}
		return nil, fmt.Errorf("read budget ConfigMap %s: %w", j.key, err)
	}
	j.cached = cm
	return cm, nil
}

// write stores data as an update of cur (its resourceVersion makes the API
// server refuse it if anyone wrote since), or creates the ConfigMap if cur is
// nil (refused if anyone created it since).
func (j *Journal) write(ctx context.Context, cur *corev1.ConfigMap, data string) error {
	var cm *corev1.ConfigMap
	if cur == nil {
		cm = &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: j.key.Namespace, Name: j.key.Name}}
	} else {
		cm = cur.DeepCopy()
	}
	if cm.Labels == nil {
		cm.Labels = map[string]string{}
	}
	cm.Labels[ManagedByLabel] = ManagedBy
	for k, v := range j.labels {
		cm.Labels[k] = v
	}
	if j.owner != nil && !hasOwner(cm.OwnerReferences, j.owner.UID) {
		cm.OwnerReferences = append(cm.OwnerReferences, *j.owner)
	}
	if cm.Data == nil {
		cm.Data = map[string]string{}
	}
	cm.Data[DataKey] = data
	var err error
	if cur == nil {
		err = j.c.Create(ctx, cm)
	} else {
		err = j.c.Update(ctx, cm)
	}
	if err != nil {
		return err
	}
	j.cached = cm
	return nil
}

func hasOwner(refs []metav1.OwnerReference, uid types.UID) bool {
	for _, r := range refs {
		if r.UID == uid {
			return true
		}
	}
	return false
}

// document is the JSON in DataKey: short keys, because it is rewritten
// several times a window.
type document struct {
	Version int                 `json:"v"`
	Claims  map[string][]record `json:"c"`
}

type record struct {
	ID    string `json:"i"`
	At    int64  `json:"a"` // Unix ms, rounded down
	Until int64  `json:"u"` // Unix ms, rounded up
	Slots int    `json:"n"`
}

func encode(claims map[string][]budget.Claim) (string, error) {
	doc := document{Version: formatVersion, Claims: make(map[string][]record, len(claims))}
	for ep, cs := range claims {
		if len(cs) == 0 {
			continue
		}
		rs := make([]record, 0, len(cs))
		for _, c := range cs {
			rs = append(rs, record{ID: c.ID, At: c.At.UnixMilli(), Until: ceilMilli(c.Until), Slots: c.Slots})
		}
		doc.Claims[ep] = rs
	}
	b, err := json.Marshal(doc)
	return string(b), err
}

func ceilMilli(t time.Time) int64 {
	ms := t.UnixMilli()
	if time.UnixMilli(ms).Before(t) {
		ms++
	}
	return ms
}

// decode reads the claims of cm (none if cm is nil or has none). A document
// it cannot read is an error, not an empty budget: treating it as empty could
// overspend.
func (j *Journal) decode(cm *corev1.ConfigMap) (map[string][]budget.Claim, error) {
	return decode(j.key, cm)
}

func decode(key types.NamespacedName, cm *corev1.ConfigMap) (map[string][]budget.Claim, error) {
	claims := map[string][]budget.Claim{}
	if cm == nil || cm.Data[DataKey] == "" {
		return claims, nil
	}
	var doc document
	err := json.Unmarshal([]byte(cm.Data[DataKey]), &doc)
	if err == nil && doc.Version != formatVersion {
		err = fmt.Errorf("format version %d, want %d", doc.Version, formatVersion)
	}
	if err != nil {
		return nil, fmt.Errorf("decode budget claims in ConfigMap %s (delete key %s to reset; Finch may then answer 429 for up to one window): %w", key, DataKey, err)
	}
	for ep, rs := range doc.Claims {
		for _, r := range rs {
			if r.Slots <= 0 {
				continue // counts for nothing
			}
			claims[ep] = append(claims[ep], budget.Claim{ID: r.ID, At: time.UnixMilli(r.At), Until: time.UnixMilli(r.Until), Slots: r.Slots})
		}
	}
	return claims, nil
}
