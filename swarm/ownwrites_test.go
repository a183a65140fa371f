package swarm_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/shoalproject/shoal/swarm/api"
	"github.com/shoalproject/shoal/swarm/swarmtest"
)

// A client of a follower reads its own writes there: the follower
// forwards each write to the leader and answers only once it has applied
// it (docker stack deploy creates a secret through a follower's shoald,
// then looks it up by name at once).
func TestFollowerReadsItsOwnWrites(t *testing.T) {
	c := swarmtest.NewTLS(t, swarmtest.TLSOptions{Managers: 3})
	ctx := context.Background()
	leader := c.LeaderName()
	follower := "m1"
	if leader == follower {
		follower = "m2"
	}
	cl := c.Node(follower).Client() // its own manager first
	for i := range 30 {
		name := fmt.Sprintf("s%d", i)
		created, err := cl.CreateSecret(ctx, api.SecretSpec{Annotations: api.Annotations{Name: name}, Data: []byte("x")})
		if err != nil {
			t.Fatal(err)
		}
		got, err := cl.Secret(ctx, name)
		if err != nil {
			t.Fatalf("write %d: the secret created through %s is not there at once: %v", i, follower, err)
		}
		if got.ID != created.ID {
			t.Fatalf("write %d: got secret %s, created %s", i, got.ID, created.ID)
		}
	}
}
