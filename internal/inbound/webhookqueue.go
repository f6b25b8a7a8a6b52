package inbound

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
)

// The webhook receiver answers Finch once a verified event is queued, not
// once it is written: Finch retries a delivery that is not answered 2xx in
// time only after 5 s, 5 minutes, 30 minutes and 2 hours ("Retries",
// Finch-API/finch-docs docs/Development-Guides/Webhooks.md; Finch's webhook
// docs, developer.tryfinch.com/developer-resources/Webhooks, also ask to
// "respond with a 200" at once and process the event separately). During a
// storm (Finch flips many connections at once) a receiver that waits for the
// API server would leave employers waiting minutes to hours for their
// reauthentication link.
//
// The queue is in memory: an event queued but not yet written when the
// process dies is lost. The FinchConnection's periodic introspection
// (spec.introspectionInterval of its app, 6 hours by default) still finds
// the status Finch reported, so nothing is lost for good. On shutdown the
// server stops accepting deliveries (Finch retries them elsewhere or later)
// and writes what is queued before it exits.

const (
	// recordRetryFor bounds how long a worker retries one failed write
	// (the API server busy or unavailable) before giving up on the event.
	recordRetryFor = time.Minute
	// queueFullRetryAfter is the Retry-After of a 503 answered when the queue
	// is full (Finch's own schedule decides; its first retry comes after 5 s).
	queueFullRetryAfter = 5 * time.Second
)

var (
	errQueueFull   = errors.New("webhook queue full")
	errQueueClosed = errors.New("webhook queue closed: shutting down")
)

// webhookRecord is what a worker writes on one FinchConnection: the latest
// verified event about it of one kind.
type webhookRecord struct {
	conn    types.NamespacedName
	kind    string // what the event records; events of different kinds never coalesce
	eventID string
	status  string // account.updated's data.status (bounded); an initial sync's kind
	detail  string // what the Event recorded with it says, if any
}

func (r *webhookRecord) key() string { return r.kind + "\x00" + r.conn.String() }

// webhookQueue holds at most size records, one per connection and kind:
// a newer event for a connection that is still waiting replaces the older
// one (coalescing), which is what the annotation would show anyway, since
// each write replaces the last and the controller acts on the latest. A
// connection being written is not handed to a second worker until its write
// ends, so the newer event always lands last.
type webhookQueue struct {
	size   int
	record func(context.Context, *webhookRecord) error
	log    logr.Logger

	mu       sync.Mutex
	cond     *sync.Cond
	pending  map[string]*webhookRecord // waiting, by key
	ready    []string                  // keys of pending records no worker is writing, FIFO
	inflight map[string]bool           // keys being written
	depth    int                       // last published to webhookQueueDepth
	closed   bool
	stop     context.Context // cancelled when a drain runs out of time
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

func newWebhookQueue(size, workers int, record func(context.Context, *webhookRecord) error, log logr.Logger) *webhookQueue {
	q := &webhookQueue{size: size, record: record, log: log, pending: map[string]*webhookRecord{}, inflight: map[string]bool{}}
	q.cond = sync.NewCond(&q.mu)
	q.stop, q.cancel = context.WithCancel(context.Background())
	for range workers {
		q.wg.Add(1)
		go q.work()
	}
	return q
}

// add queues recs, all or none: errQueueFull when the records that coalesce
// with none waiting do not fit, errQueueClosed once the server shuts down.
func (q *webhookQueue) add(recs []*webhookRecord) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return errQueueClosed
	}
	fresh := 0
	for _, r := range recs {
		if q.pending[r.key()] == nil {
			fresh++
		}
	}
	if len(q.pending)+fresh > q.size {
		return errQueueFull
	}
	for _, r := range recs {
		k := r.key()
		_, waiting := q.pending[k]
		q.pending[k] = r
		if !waiting && !q.inflight[k] {
			q.ready = append(q.ready, k)
			q.cond.Signal()
		}
	}
	q.depthLocked()
	return nil
}

// depthLocked publishes the number of events queued or being written (as a
// change, so that the gauge adds up the queues of a process's Servers).
func (q *webhookQueue) depthLocked() {
	d := len(q.pending) + len(q.inflight)
	webhookQueueDepth.Add(float64(d - q.depth))
	q.depth = d
}

func (q *webhookQueue) work() {
	defer q.wg.Done()
	for {
		q.mu.Lock()
		for len(q.ready) == 0 && !q.closed {
			q.cond.Wait()
		}
		if len(q.ready) == 0 {
			q.mu.Unlock()
			return // closed and nothing left for this worker
		}
		k := q.ready[0]
		q.ready[0] = ""
		q.ready = q.ready[1:]
		rec := q.pending[k]
		delete(q.pending, k)
		q.inflight[k] = true
		q.mu.Unlock()

		q.write(rec)

		q.mu.Lock()
		delete(q.inflight, k)
		if q.pending[k] != nil { // a newer event came while writing
			q.ready = append(q.ready, k)
			q.cond.Signal()
		}
		q.depthLocked()
		q.mu.Unlock()
	}
}

// write records one event, retrying failed writes with backoff for up to
// recordRetryFor (Finch was already answered 2xx and will not send it again).
func (q *webhookQueue) write(rec *webhookRecord) {
	log := q.log.WithValues("finchConnection", rec.conn.String(), "eventID", rec.eventID)
	deadline := time.Now().Add(recordRetryFor)
	backoff := 100 * time.Millisecond
	for {
		ctx, cancel := context.WithTimeout(q.stop, apiTimeout)
		err := q.record(ctx, rec)
		cancel()
		switch {
		case err == nil:
			log.Info("webhook recorded", "status", rec.status)
			return
		case apierrors.IsNotFound(err):
			log.V(1).Info("webhook: the FinchConnection is gone")
			return
		case time.Now().Add(backoff).After(deadline) || q.stop.Err() != nil:
			log.Error(err, "webhook event not recorded; the connection's periodic introspection will find its status")
			return
		}
		log.V(1).Info("webhook: recording failed, retrying", "error", err.Error(), "in", backoff)
		select {
		case <-time.After(backoff):
		case <-q.stop.Done():
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// drain stops accepting records and waits until every queued one is
// written, or until ctx ends (then writes in progress are abandoned).
func (q *webhookQueue) drain(ctx context.Context) error {
	q.mu.Lock()
	q.closed = true
	left := len(q.pending) + len(q.inflight)
	q.cond.Broadcast()
	q.mu.Unlock()
	if left > 0 {
		q.log.Info("shutting down: recording the queued webhook events", "queued", left)
	}
	done := make(chan struct{})
	go func() {
		q.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		q.cancel()
		q.mu.Lock()
		lost := len(q.pending) + len(q.inflight)
		q.mu.Unlock()
		q.log.Error(ctx.Err(), "shutting down: webhook events not recorded; the connections' periodic introspection will find their status", "lost", lost)
		return ctx.Err()
	}
}

// DrainWebhooks stops accepting webhook deliveries (they are answered 503, so
// Finch retries them) and returns once every queued event is recorded, or
// ctx ends. The Runnable calls it on shutdown, after the HTTP server stopped.
func (s *Server) DrainWebhooks(ctx context.Context) error { return s.webhooks.drain(ctx) }
