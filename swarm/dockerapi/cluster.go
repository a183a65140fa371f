package dockerapi

import (
	"net/http"

	dswarm "github.com/moby/moby/api/types/swarm"

	"github.com/shoalproject/shoal/swarm/api"
)

// swarmInspect answers docker swarm inspect and join-token: the cluster
// with its join tokens (managers only).
func (h *Handler) swarmInspect(w http.ResponseWriter, r *http.Request) error {
	c, err := h.Backend.Cluster(r.Context())
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, dswarm.Swarm{
		ClusterInfo: clusterInfoToDocker(c),
		JoinTokens:  dswarm.JoinTokens{Worker: c.JoinTokens.Worker, Manager: c.JoinTokens.Manager},
	})
}

// swarmUpdate answers docker swarm update and join-token --rotate: the
// spec's changes (task history, heartbeat, certificate expiry, snapshot
// interval, labels) and token rotations. Everything is checked before
// anything is written.
func (h *Handler) swarmUpdate(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	version, err := queryVersion(r, "swarm")
	if err != nil {
		return err
	}
	var flags [3]bool
	for i, name := range []string{"rotateWorkerToken", "rotateManagerToken", "rotateManagerUnlockKey"} {
		if flags[i], err = queryBool(r, name); err != nil {
			return err
		}
	}
	var spec dswarm.Spec
	if err := readJSON(r, &spec); err != nil {
		return err
	}
	if flags[2] {
		return badRequest("not supported by Shoal yet: rotating the unlock key through the Docker API (docker swarm unlock-key --rotate); Shoal keeps an unlock key per manager")
	}
	cur, err := h.Backend.Cluster(ctx)
	if err != nil {
		return err
	}
	next, err := clusterSpecFromDocker(spec, cur.Spec)
	if err != nil {
		return err
	}
	if !sameJSON(next, cur.Spec) {
		if err := next.Validate(); err != nil {
			return err
		}
		if _, err := h.Backend.UpdateCluster(ctx, version, next); err != nil {
			return err
		}
	}
	if flags[0] {
		if _, err := h.Backend.RotateJoinToken(ctx, api.RoleWorker); err != nil {
			return err
		}
	}
	if flags[1] {
		if _, err := h.Backend.RotateJoinToken(ctx, api.RoleManager); err != nil {
			return err
		}
	}
	w.WriteHeader(http.StatusOK)
	return nil
}

// unlockKey answers docker swarm unlock-key with this manager's key.
func (h *Handler) unlockKey(w http.ResponseWriter, r *http.Request) error {
	uk, ok := h.Self.(UnlockKeyer)
	if !ok {
		return notYet("the unlock key through the Docker API on this host (serve the handler with ForNode)")
	}
	k, err := uk.UnlockKey()
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, dswarm.UnlockKeyResponse{UnlockKey: k})
}

// unlock answers docker swarm unlock on a locked manager.
func (h *Handler) unlock(w http.ResponseWriter, r *http.Request) error {
	var req dswarm.UnlockRequest
	if err := readJSON(r, &req); err != nil {
		return err
	}
	u, ok := h.Self.(Unlocker)
	switch {
	case !ok:
		return notYet("unlocking through the Docker API on this host (serve the handler with ForNode)")
	case !u.Locked():
		return badRequest("swarm is not locked")
	}
	if err := u.Unlock(r.Context(), req.UnlockKey); err != nil {
		return err
	}
	w.WriteHeader(http.StatusOK)
	return nil
}
