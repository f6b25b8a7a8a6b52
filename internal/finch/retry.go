package finch

import (
	"context"
	"math"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// retryPolicy says which failures a call may retry.
type retryPolicy int

const (
	// retryAll: 429, 5xx, 408, 409, network errors, and any status Finch
	// marks x-should-retry: true. For idempotent calls. The statuses are the
	// SDKs' (finch-api-go internal/requestconfig/requestconfig.go shouldRetry;
	// finch-api-node src/client.ts, formerly src/core.ts, shouldRetry: 408,
	// 409 "lock timeouts", 429, >=500).
	retryAll retryPolicy = iota
	// retryRateLimited: 429 only, which Finch answers before processing the
	// request. For calls that must not run twice (reauthenticate, code
	// exchange): after a 5xx or a network error the request may have been
	// processed.
	retryRateLimited
)

// Retry reasons (the "reason" label of finch_api_retries_total).
const (
	reasonRateLimited = "rate_limited"
	reasonServerError = "server_error"
	reasonConflict    = "conflict"     // 409, a lock timeout in the SDKs' words
	reasonShouldRetry = "should_retry" // x-should-retry: true on a status not retried otherwise
	reasonNetwork     = "network"
)

const (
	backoffBase = 500 * time.Millisecond
	backoffCap  = 8 * time.Second
	// maxRetryAfter bounds what a server can ask for, so that absurd values
	// cannot overflow a time.Duration.
	maxRetryAfter = 24 * time.Hour
)

// backoff returns the wait before retry number n (0 for the first retry):
// 0.5s·2^n capped at 8s, shortened by up to 25% and never lengthened, as the
// SDKs do it (finch-api-node src/client.ts calculateDefaultRetryTimeoutMillis:
// "jitter = 1 - Math.random() * 0.25"; finch-api-go
// internal/requestconfig/requestconfig.go retryDelay: "delay -= jitter" with
// jitter < delay/4), so the cap is a real bound.
func backoff(n int) time.Duration {
	d := backoffCap
	if n < 5 { // 0.5s·2^4 = 8s
		d = min(backoffBase<<n, backoffCap)
	}
	jitter := 1 - rand.Float64()*0.25
	return time.Duration(float64(d) * jitter)
}

// retryAfter reads retry-after-ms, then retry-after (delay seconds or an HTTP
// date). It returns 0 when neither is present or usable.
func retryAfter(h http.Header, now time.Time) time.Duration {
	if v := strings.TrimSpace(h.Get("Retry-After-Ms")); v != "" {
		if ms, err := strconv.ParseFloat(v, 64); err == nil && ms > 0 && !math.IsInf(ms, 0) {
			return clampRetryAfter(ms * float64(time.Millisecond))
		}
	}
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseFloat(v, 64); err == nil {
		if s > 0 && !math.IsInf(s, 0) {
			return clampRetryAfter(s * float64(time.Second))
		}
		return 0
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return min(d, maxRetryAfter)
		}
	}
	return 0
}

func clampRetryAfter(ns float64) time.Duration {
	if ns >= float64(maxRetryAfter) {
		return maxRetryAfter
	}
	return time.Duration(ns)
}

// sleepCtx waits for d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
