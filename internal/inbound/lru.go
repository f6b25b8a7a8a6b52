package inbound

import (
	"container/list"
	"sync"
	"time"
)

// lru is a bounded, concurrency-safe least-recently-used set of keys with a
// value and an optional time-to-live per entry.
type lru[V any] struct {
	mu    sync.Mutex
	size  int
	ttl   time.Duration // 0: entries never expire (only eviction removes them)
	now   func() time.Time
	order *list.List // front = most recently used; elements hold *lruEntry[V]
	items map[string]*list.Element
}

type lruEntry[V any] struct {
	key     string
	val     V
	addedAt time.Time
}

func newLRU[V any](size int, ttl time.Duration, now func() time.Time) *lru[V] {
	if size <= 0 {
		size = 1
	}
	return &lru[V]{size: size, ttl: ttl, now: now, order: list.New(), items: make(map[string]*list.Element, min(size, 1024))}
}

// Get returns the value of a live entry and marks it recently used.
func (c *lru[V]) Get(key string) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var zero V
	el, ok := c.items[key]
	if !ok {
		return zero, false
	}
	e := el.Value.(*lruEntry[V])
	if c.ttl > 0 && c.now().Sub(e.addedAt) >= c.ttl {
		c.order.Remove(el)
		delete(c.items, key)
		return zero, false
	}
	c.order.MoveToFront(el)
	return e.val, true
}

// Contains is Get without the value.
func (c *lru[V]) Contains(key string) bool {
	_, ok := c.Get(key)
	return ok
}

// Add inserts or refreshes an entry, evicting the least recently used one
// when full.
func (c *lru[V]) Add(key string, val V) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[key]; ok {
		e := el.Value.(*lruEntry[V])
		e.val, e.addedAt = val, c.now()
		c.order.MoveToFront(el)
		return
	}
	c.items[key] = c.order.PushFront(&lruEntry[V]{key: key, val: val, addedAt: c.now()})
	for c.order.Len() > c.size {
		oldest := c.order.Back()
		c.order.Remove(oldest)
		delete(c.items, oldest.Value.(*lruEntry[V]).key)
	}
}

// Len is the number of entries (expired ones included until touched or evicted).
func (c *lru[V]) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}

// eventLimiter lets at most burst events per key through, then one per
// interval: Warning events triggered by unauthenticated requests (anyone can
// GET a callback URL with a made-up code) must not flood the API server.
type eventLimiter struct {
	burst    float64
	interval time.Duration
	now      func() time.Time
	buckets  *lru[*bucket]
	mu       sync.Mutex
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newEventLimiter(burst int, interval time.Duration, now func() time.Time) *eventLimiter {
	return &eventLimiter{burst: float64(burst), interval: interval, now: now, buckets: newLRU[*bucket](4096, 0, now)}
}

// Allow takes a token from key's bucket.
func (l *eventLimiter) Allow(key string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	b, ok := l.buckets.Get(key)
	if !ok {
		b = &bucket{tokens: l.burst, last: now}
		l.buckets.Add(key, b)
	}
	if elapsed := now.Sub(b.last); elapsed > 0 {
		b.tokens = min(l.burst, b.tokens+float64(elapsed)/float64(l.interval))
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// Take is Allow that also says, when it refuses, how long until a token is
// back (for a Retry-After header).
func (l *eventLimiter) Take(key string) (bool, time.Duration) {
	if l.Allow(key) {
		return true, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets.Get(key)
	if !ok {
		return false, l.interval
	}
	return false, time.Duration((1 - b.tokens) * float64(l.interval))
}
