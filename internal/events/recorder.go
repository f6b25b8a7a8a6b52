package events

import (
	"container/list"
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/reference"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/recorder"
)

// Recorder writes events.k8s.io/v1 Events, as controller-runtime's recorder
// does, with bounded memory and concurrency. client-go's events broadcaster
// keeps every Event it recorded, whole, for 6 to 12 minutes (its series
// cache) and starts a goroutine per Event: a burst of 50,000 new connections
// (one SessionCreated each) held about 1 KiB per connection that long. Here
// at most QueueSize Events wait for Workers writers, and the last SeriesSize
// distinct Events are remembered (key and name only) so that a repeat within
// SeriesWindow becomes a series count on the first one, as client-go does.
// When the queue is full, Eventf waits up to MaxWait for room (slowing the
// reconcile that records it), then drops the Event and counts it (Dropped).
type Recorder struct {
	// Client writes the Events.
	Client client.Client
	// Scheme resolves the kind of the objects Events are about.
	Scheme *runtime.Scheme
	// Controller is the reportingController; the reportingInstance is
	// Controller-<hostname>.
	Controller string
	// Workers, QueueSize, SeriesSize, SeriesWindow and MaxWait (how long
	// Eventf waits for room in a full queue before dropping) have defaults
	// (16, 2048, 1024, 6m, 5s).
	Workers, QueueSize, SeriesSize int
	SeriesWindow, MaxWait          time.Duration

	once     sync.Once
	queue    chan *pending
	instance string

	mu      sync.Mutex
	series  map[seriesKey]*list.Element // of *seriesEntry
	order   *list.List                  // front: most recent
	dropped int64
}

// seriesKey is what makes two Events the same ("isomorphic" in client-go).
type seriesKey struct {
	uid                        types.UID
	typ, reason, action, note  string
	relatedKind, relatedName   string
	relatedNamespace, regarded string
}

type seriesEntry struct {
	key   seriesKey
	name  string // the Event's name, "" until its create succeeded
	ns    string
	count int32
	first time.Time
}

// pending is one write: a new Event, or a series update of an old one.
type pending struct {
	event  *eventsv1.Event
	series *seriesEntry // set for a repeat: patch this Event's series
	count  int32
}

func (r *Recorder) init() {
	r.once.Do(func() {
		if r.Workers <= 0 {
			r.Workers = 16
		}
		if r.QueueSize <= 0 {
			r.QueueSize = 2048
		}
		if r.MaxWait <= 0 {
			r.MaxWait = 5 * time.Second
		}
		if r.SeriesSize <= 0 {
			r.SeriesSize = 1024
		}
		if r.SeriesWindow <= 0 {
			r.SeriesWindow = 6 * time.Minute
		}
		r.queue = make(chan *pending, r.QueueSize)
		host, _ := os.Hostname()
		r.instance = r.Controller + "-" + host
		if len(r.instance) > 128 {
			r.instance = r.instance[:128]
		}
		r.series = map[seriesKey]*list.Element{}
		r.order = list.New()
	})
}

// Eventf records an Event about regarding (events.EventRecorder).
func (r *Recorder) Eventf(regarding, related runtime.Object, eventtype, reason, action, note string, args ...any) {
	r.record(true, regarding, related, nil, eventtype, reason, action, note, args...)
}

// AnnotatedEventf is Eventf with annotations on the Event
// (events.AnnotatedEventRecorder).
func (r *Recorder) AnnotatedEventf(regarding, related runtime.Object, annotations map[string]string, eventtype, reason, action, note string, args ...any) {
	r.record(true, regarding, related, annotations, eventtype, reason, action, note, args...)
}

// NonBlocking records through the same queue and writers but never waits for
// room in a full queue: for the inbound server's handlers, whose callers
// (Finch, an employer's browser) time out, and which must not slow down
// when the API server already does.
func (r *Recorder) NonBlocking() recorder.EventRecorder { return nonBlocking{r} }

type nonBlocking struct{ r *Recorder }

func (n nonBlocking) Eventf(regarding, related runtime.Object, eventtype, reason, action, note string, args ...any) {
	n.r.record(false, regarding, related, nil, eventtype, reason, action, note, args...)
}

func (n nonBlocking) AnnotatedEventf(regarding, related runtime.Object, annotations map[string]string, eventtype, reason, action, note string, args ...any) {
	n.r.record(false, regarding, related, annotations, eventtype, reason, action, note, args...)
}

func (r *Recorder) record(wait bool, regarding, related runtime.Object, annotations map[string]string, eventtype, reason, action, note string, args ...any) {
	r.init()
	log := logf.Log.WithName("events")
	ref, err := reference.GetReference(r.Scheme, regarding)
	if err != nil {
		log.Error(err, "no reference for the Event's object", "reason", reason)
		return
	}
	var relRef *corev1.ObjectReference
	if related != nil {
		if relRef, err = reference.GetReference(r.Scheme, related); err != nil {
			log.Error(err, "no reference for the Event's related object", "reason", reason)
			relRef = nil
		}
	}
	now := time.Now()
	msg := Truncate(fmt.Sprintf(note, args...), MaxMessage)
	key := seriesKey{uid: ref.UID, typ: eventtype, reason: reason, action: action, note: msg,
		regarded: ref.Namespace + "/" + ref.Name}
	if relRef != nil {
		key.relatedKind, key.relatedNamespace, key.relatedName = relRef.Kind, relRef.Namespace, relRef.Name
	}

	r.mu.Lock()
	if el, ok := r.series[key]; ok {
		e := el.Value.(*seriesEntry)
		if now.Sub(e.first) < r.SeriesWindow {
			e.count++
			r.order.MoveToFront(el)
			if e.name == "" {
				// Its create is still queued: the writer sets the count
				// once the Event exists.
				r.mu.Unlock()
				return
			}
			p := &pending{series: e, count: e.count}
			r.mu.Unlock()
			r.enqueue(p, wait)
			return
		}
		r.order.Remove(el)
		delete(r.series, key)
	}
	entry := &seriesEntry{key: key, count: 1, first: now}
	r.series[key] = r.order.PushFront(entry)
	for r.order.Len() > r.SeriesSize {
		old := r.order.Remove(r.order.Back()).(*seriesEntry)
		delete(r.series, old.key)
	}
	r.mu.Unlock()

	ns := ref.Namespace
	if ns == "" {
		ns = metav1.NamespaceDefault
	}
	ev := &eventsv1.Event{
		ObjectMeta: metav1.ObjectMeta{
			Name:        fmt.Sprintf("%v.%x", ref.Name, now.UnixNano()),
			Namespace:   ns,
			Annotations: annotations,
		},
		EventTime:           metav1.NewMicroTime(now),
		ReportingController: r.Controller,
		ReportingInstance:   r.instance,
		Action:              action,
		Reason:              reason,
		Regarding:           *ref,
		Related:             relRef,
		Note:                msg,
		Type:                eventtype,
	}
	entry.ns = ns
	r.enqueue(&pending{event: ev, series: entry}, wait)
}

func (r *Recorder) enqueue(p *pending, wait bool) {
	select {
	case r.queue <- p:
		return
	default:
	}
	if !wait {
		r.drop(p)
		return
	}
	// Full: the API server is slower than Events come (a burst of new
	// connections). Waiting a little slows the reconciles that record them,
	// which is the backpressure wanted; only beyond that is one dropped.
	t := time.NewTimer(r.MaxWait)
	defer t.Stop()
	select {
	case r.queue <- p:
	case <-t.C:
		r.drop(p)
	}
}

func (r *Recorder) drop(p *pending) {
	r.mu.Lock()
	r.dropped++
	r.mu.Unlock()
	eventsDropped.Inc()
	if p.event != nil {
		r.forget(p.series) // a repeat must not count on an Event never written
	}
}

// eventsDropped counts Events dropped for a full queue, across Recorders.
var eventsDropped = prometheus.NewCounter(prometheus.CounterOpts{
	Name: "finch_events_dropped_total",
	Help: "Kubernetes Events not recorded because the API server was slower than they came for longer than the recorder waits.",
})

func init() { metrics.Registry.MustRegister(eventsDropped) }

// Dropped is how many Events were dropped because the queue was full.
func (r *Recorder) Dropped() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.dropped
}

// Start runs the writers until ctx ends, then writes what is queued for up
// to 2 seconds (manager.Runnable).
func (r *Recorder) Start(ctx context.Context) error {
	r.init()
	var wg sync.WaitGroup
	for range r.Workers {
		wg.Go(func() {
			for {
				select {
				case p := <-r.queue:
					r.write(ctx, p)
				case <-ctx.Done():
					return
				}
			}
		})
	}
	<-ctx.Done()
	wg.Wait()
	drain, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for {
		select {
		case p := <-r.queue:
			r.write(drain, p)
		default:
			return nil
		}
		if drain.Err() != nil {
			return nil
		}
	}
}

// NeedLeaderElection is false: every replica records its own Events (the
// inbound server runs on all of them).
func (r *Recorder) NeedLeaderElection() bool { return false }

func (r *Recorder) write(ctx context.Context, p *pending) {
	log := logf.FromContext(ctx).WithName("events")
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if p.event != nil {
		if err := r.Client.Create(ctx, p.event); err != nil {
			log.Info("could not record Event", "reason", p.event.Reason, "object", p.event.Regarding.Name, "error", err.Error())
			r.forget(p.series)
			return
		}
		r.mu.Lock()
		p.series.name = p.event.Name
		p.count = p.series.count
		r.mu.Unlock()
		if p.count < 2 {
			return
		}
	}
	r.mu.Lock()
	name, ns := p.series.name, p.series.ns
	r.mu.Unlock()
	patch := fmt.Appendf(nil, `{"series":{"count":%d,"lastObservedTime":%q}}`, p.count, metav1.NewMicroTime(time.Now()).UTC().Format(metav1.RFC3339Micro))
	ev := &eventsv1.Event{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	if err := r.Client.Patch(ctx, ev, client.RawPatch(types.MergePatchType, patch)); err != nil {
		log.Info("could not update Event series", "event", name, "error", err.Error())
		r.forget(p.series)
	}
}

// forget drops a series whose Event could not be written, so the next
// repeat creates a new Event instead of patching a missing one.
func (r *Recorder) forget(e *seriesEntry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if el, ok := r.series[e.key]; ok && el.Value.(*seriesEntry) == e {
		r.order.Remove(el)
		delete(r.series, e.key)
	}
}
