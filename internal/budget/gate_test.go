package budget

import (
	"context"
	"errors"
	"testing"
	"time"
)

// Admit with an id gives the caller a place in the application's line and
// keeps it when the caller comes back; the client's Acquire then takes the
// slot without deciding again.
func TestGateAdmitPlacesInTheLine(t *testing.T) {
	g := Gate{Budget: New(Config{Requests: 1, Window: time.Hour})}
	if wait, inLine := g.Admit(EndpointIntrospect, "t", "ns/a", 5*time.Second); wait != 0 || inLine {
		t.Fatalf("free budget: Admit = %v, %v; want 0, false", wait, inLine)
	}
	done, err := g.Acquire(context.Background(), EndpointIntrospect)
	if err != nil {
		t.Fatal(err)
	}
	done(time.Now())
	wait, inLine := g.Admit(EndpointIntrospect, "t", "ns/b", 5*time.Second)
	if wait < 59*time.Minute || !inLine {
		t.Fatalf("spent budget: Admit = %v, %v; want about an hour, in line", wait, inLine)
	}
	if n := waiting(g.Budget, EndpointIntrospect); n != 1 {
		t.Errorf("%d waiting, want 1", n)
	}
	if again, _ := g.Admit(EndpointIntrospect, "t", "ns/b", 5*time.Second); again > wait || waiting(g.Budget, EndpointIntrospect) != 1 {
		t.Errorf("coming back early: %v (was %v), %d waiting; want the same one place", again, wait, waiting(g.Budget, EndpointIntrospect))
	}
}

// Without an id (an employer's callback) Admit takes no place: the call goes
// if its slot is due within maxBlock, else it is told how long to stay away.
func TestGateAdmitWithoutIDTakesNoPlace(t *testing.T) {
	g := Gate{Budget: New(Config{Requests: 1, Window: time.Hour})}
	if err := g.Budget.Wait(context.Background(), EndpointToken); err != nil {
		t.Fatal(err)
	}
	wait, inLine := g.Admit(EndpointToken, "t", "", 20*time.Second)
	if wait < 59*time.Minute || inLine {
		t.Errorf("Admit = %v, %v; want about an hour, not in line", wait, inLine)
	}
	if n := waiting(g.Budget, EndpointToken); n != 0 {
		t.Errorf("%d waiting, want none", n)
	}
	if wait, _ := g.Admit(EndpointToken, "t", "", 2*time.Hour); wait != 0 {
		t.Errorf("slot due within maxBlock: Admit = %v, want 0 (go and wait in the client)", wait)
	}
}

// During the host's per-IP penalty Admit says to stay away for the rest of
// it (spread by up to a tenth, no place taken) and Acquire refuses with a
// PenaltyError without taking the application's slot.
func TestGateDuringThePenalty(t *testing.T) {
	guard := NewIPGuard(Config{})
	g := Gate{Budget: New(Config{Requests: 1, Window: time.Hour}), Guard: guard}
	guard.penalize(10 * time.Minute)
	wait, inLine := g.Admit(EndpointCreateSession, "t", "ns/a", 5*time.Second)
	if wait < 9*time.Minute || wait > 11*time.Minute+time.Second || inLine {
		t.Errorf("Admit = %v, %v; want the penalty's 10m (+ up to 10%%), not in line", wait, inLine)
	}
	if n := waiting(g.Budget, EndpointCreateSession); n != 0 {
		t.Errorf("%d waiting, want none", n)
	}
	_, err := g.Acquire(context.Background(), EndpointCreateSession)
	var pe *PenaltyError
	if !errors.As(err, &pe) || pe.Left <= 9*time.Minute || pe.Left > 10*time.Minute {
		t.Fatalf("Acquire = %v, want a PenaltyError with about 10m left", err)
	}
	if d := g.Budget.Delay(EndpointCreateSession); d != 0 {
		t.Errorf("application budget Delay = %v after a refusal, want 0 (no slot taken)", d)
	}
}

// Acquire takes one slot of each budget; done moves them to the response.
func TestGateAcquireTakesBothSlots(t *testing.T) {
	g := Gate{Budget: New(Config{Requests: 2, Window: time.Hour}), Guard: NewIPGuard(Config{Requests: 1, Window: time.Hour})}
	done, err := g.Acquire(context.Background(), EndpointIntrospect)
	if err != nil {
		t.Fatal(err)
	}
	done(time.Now())
	if d := g.Budget.Delay(EndpointIntrospect); d != 0 {
		t.Errorf("application budget Delay = %v, want 0 (one of two slots used)", d)
	}
	if d := g.Guard.Delay(); d < 59*time.Minute {
		t.Errorf("guard Delay = %v, want about an hour (its one slot used)", d)
	}
	if wait, _ := (Gate{}).Admit(EndpointIntrospect, "t", "ns/a", 0); wait != 0 {
		t.Errorf("zero Gate: Admit = %v, want 0", wait)
	}
}
