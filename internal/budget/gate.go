package budget

import (
	"context"
	"math/rand/v2"
	"time"
)

// Gate is the one admission of one app object's Finch calls: the request
// Budget of its Finch application and the IPGuard of its API host. Callers
// with other work to do ask Admit once before a call; the Finch client, which
// takes a Gate as its limiter (as middleware around its HTTP calls), takes
// each attempt's slots with Acquire and reports the per-IP penalty with
// Penalize. The zero Gate admits everything.
type Gate struct {
	Budget *Budget  // the Finch application's (nil: none)
	Guard  *IPGuard // the API host's, shared by every app calling it (nil: none)
}

// Admit is for callers that come back later instead of blocking a worker:
// it returns 0 when the call may go now (its slots are free, or due within
// maxBlock: the client then waits for them), or else how long to stay away.
//
// With an id, waiter id of tenant takes a place in the Finch application's
// fair line for endpoint (Budget.Queue) and inLine reports that wait is its
// place. Without one it takes no place: the call goes if its slot is due
// within maxBlock. During the host's per-IP penalty, or when the operator-wide
// IP budget is further off than maxBlock, the wait is the guard's, spread a
// little (the guard keeps no line), and inLine is false.
func (g Gate) Admit(endpoint, tenant, id string, maxBlock time.Duration) (wait time.Duration, inLine bool) {
	var d time.Duration
	if g.Guard != nil {
		d = g.Guard.Delay()
	}
	switch {
	case d > maxBlock:
		return d + time.Duration(rand.Int64N(int64(d/10)+1)), false
	case g.Budget == nil:
		return 0, false
	case id == "":
		if d = max(d, g.Budget.Delay(endpoint)); d > maxBlock {
			return d, false
		}
		return 0, false
	}
	d = g.Budget.Queue(endpoint, tenant, id, maxBlock)
	return d, d > 0
}

// Acquire waits until one attempt at endpoint may be sent and takes its
// slots: one of the application's Budget and one of the guard's. done records
// when the attempt's response came back (the slots count from then). During
// the guard's penalty, before or after waiting, it takes nothing and returns
// a *PenaltyError. Waiting is bounded by ctx only; a ctx error gives the
// slots back.
func (g Gate) Acquire(ctx context.Context, endpoint string) (done func(time.Time), err error) {
	if g.Guard != nil {
		if pe := g.Guard.refuse(); pe != nil {
			return nil, pe
		}
	}
	var slot, ipSlot time.Time
	if g.Budget != nil {
		if slot, err = g.Budget.acquire(ctx, endpoint); err != nil {
			return nil, err
		}
	}
	giveBack := func() {
		if g.Budget != nil {
			g.Budget.release(endpoint, slot)
		}
	}
	if g.Guard != nil {
		if ipSlot, err = g.Guard.budget.acquire(ctx, ipBudgetKey); err != nil {
			giveBack()
			return nil, err
		}
		// A penalty may have begun while this call waited for budget.
		if pe := g.Guard.refuse(); pe != nil {
			giveBack()
			g.Guard.budget.release(ipBudgetKey, ipSlot)
			return nil, pe
		}
	}
	return func(at time.Time) {
		if g.Budget != nil {
			g.Budget.complete(endpoint, slot, at)
		}
		if g.Guard != nil {
			g.Guard.budget.complete(ipBudgetKey, ipSlot, at)
		}
	}, nil
}

// Penalize records a 429 finch_api_ip_rl answer from the guard's host, with
// its Retry-After (0: none): every app calling the host stops sending until
// the penalty is over (IPGuard). Without a guard it does nothing.
func (g Gate) Penalize(retryAfter time.Duration) {
	if g.Guard != nil {
		g.Guard.penalize(retryAfter)
	}
}
