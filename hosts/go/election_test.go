package bextlock_test

import (
	"context"
	"errors"
	"testing"
	"time"

	bextlock "github.com/bext-locking/bext-locking/hosts/go"
)

func TestCampaignOneLeaderTermsRiseAndResignHandsOver(t *testing.T) {
	a, b := leaseFileLockers(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	first, err := bextlock.Campaign(ctx, a, "svc", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t1, ok := first.Term()
	if !ok {
		t.Fatal("no term on a fencing backend")
	}
	short, stop := context.WithTimeout(ctx, 200*time.Millisecond)
	if _, err := bextlock.Campaign(short, b, "svc", time.Second); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second candidate: %v, want a timeout (two leaders?)", err)
	}
	stop()
	now, err := bextlock.CurrentLeader(b, "svc")
	if err != nil || !now.Held || now.Term == nil || *now.Term != t1 {
		t.Fatalf("leader: %+v %v", now, err)
	}
	won := make(chan *bextlock.Leadership, 1)
	go func() {
		l, err := bextlock.Campaign(ctx, b, "svc", time.Second)
		if err != nil {
			t.Error(err)
		}
		won <- l
	}()
	time.Sleep(100 * time.Millisecond)
	if err := first.Resign(); err != nil {
		t.Fatal(err)
	}
	second := <-won
	if second == nil {
		t.FailNow()
	}
	if t2, _ := second.Term(); t2 <= t1 {
		t.Fatalf("terms did not rise: %d then %d", t1, t2)
	}
	if err := second.Resign(); err != nil {
		t.Fatal(err)
	}
}

func TestLeadershipContextIsCancelledOnLoss(t *testing.T) {
	a, b := leaseFileLockers(t)
	ld, err := bextlock.Campaign(context.Background(), a, "svc", 600*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.ForceRelease("svc"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ld.Context().Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the loss was not signalled")
	}
	if ld.Lost() == nil {
		t.Fatal("Lost() is nil after a loss")
	}
	if err := ld.Resign(); !errors.Is(err, bextlock.ErrLockLost) {
		t.Fatalf("Resign after a loss: %v", err)
	}
}

func TestCampaignRefusesUnfencedUnlessAllowed(t *testing.T) {
	p, err := bextlock.Open(optionalLib(t, "fixture-lease-file"))
	if err != nil {
		t.Fatal(err)
	}
	l := newLocker(t, p, map[string]any{"path": t.TempDir() + "/leases.json", "fences": false})
	if _, err := bextlock.Campaign(context.Background(), l, "svc", time.Second); !errors.Is(err, bextlock.ErrUnsupported) {
		t.Fatalf("unfenced campaign: %v, want ErrUnsupported", err)
	}
	ld, err := bextlock.Campaign(context.Background(), l, "svc", time.Second, bextlock.AllowUnfenced())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := ld.Term(); ok {
		t.Fatal("a term without fences")
	}
	_ = ld.Resign()
}

func TestObserveReportsEachChangeOfLeader(t *testing.T) {
	a, b := leaseFileLockers(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	changes := bextlock.Observe(ctx, b, "svc", 10*time.Millisecond)
	next := func() bextlock.Leader {
		select {
		case l := <-changes:
			if l.Err != nil {
				t.Fatal(l.Err)
			}
			return l
		case <-ctx.Done():
			t.Fatal("no change seen")
		}
		return bextlock.Leader{}
	}
	if l := next(); l.Held {
		t.Fatalf("a leader before any campaign: %+v", l)
	}
	ld, err := bextlock.Campaign(ctx, a, "svc", 600*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	term, _ := ld.Term()
	if l := next(); !l.Held || l.Term == nil || *l.Term != term {
		t.Fatalf("leader: %+v, want term %d", l, term)
	}
	time.Sleep(700 * time.Millisecond) // renewals are not changes
	if err := ld.Resign(); err != nil {
		t.Fatal(err)
	}
	if l := next(); l.Held {
		t.Fatalf("a renewal was reported as a change: %+v", l)
	}
	cancel()
	for range changes {
	}
}
