package raftstore

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"
)

// openLog opens the log of a data dir (dir/wal). A data dir written before
// the WAL, with its log in a bbolt file (raft.db), is migrated first: every
// entry and stable value is copied into a new WAL under a temporary name,
// which is renamed into place once complete and synced; only then is
// raft.db removed. A crash at any point leaves either the old log or the
// complete new one.
func openLog(dir string, sealer Sealer, logger *slog.Logger, segmentSize int64) (*WAL, error) {
	walDir := filepath.Join(dir, "wal")
	boltPath := filepath.Join(dir, "raft.db")
	if _, err := os.Stat(boltPath); err == nil {
		if _, err := os.Stat(walDir); errors.Is(err, os.ErrNotExist) {
			if err := migrateBolt(boltPath, walDir, sealer, logger); err != nil {
				return nil, err
			}
		}
		if err := os.Remove(boltPath); err != nil {
			return nil, fmt.Errorf("raftstore: remove the migrated %s: %w", boltPath, err)
		}
		if err := syncDir(dir); err != nil {
			return nil, err
		}
	}
	return openWAL(walDir, sealer, logger, segmentSize)
}

func migrateBolt(boltPath, walDir string, sealer Sealer, logger *slog.Logger) (err error) {
	old, err := OpenBoltLogStore(boltPath, sealer)
	if err != nil {
		return err
	}
	defer old.Close()
	tmp := walDir + ".migrating"
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	w, err := OpenWAL(tmp, sealer, logger)
	if err != nil {
		return err
	}
	defer func() {
		if w != nil {
			w.Close()
		}
		if err != nil {
			os.RemoveAll(tmp)
			err = fmt.Errorf("raftstore: migrating %s to %s: %w", boltPath, walDir, err)
		}
	}()
	if err := old.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketStable).ForEach(func(k, v []byte) error { return w.Set(k, v) })
	}); err != nil {
		return err
	}
	first, _ := old.FirstIndex()
	last, _ := old.LastIndex()
	var batch []*raft.Log
	for i := first; first != 0 && i <= last; i++ {
		l := new(raft.Log)
		if err := old.GetLog(i, l); err != nil {
			return err
		}
		batch = append(batch, l)
		if len(batch) == 1024 || i == last {
			if err := w.StoreLogs(batch); err != nil {
				return err
			}
			batch = batch[:0]
		}
	}
	cerr := w.Close()
	w = nil
	if cerr != nil {
		return cerr
	}
	if err := os.Rename(tmp, walDir); err != nil {
		return err
	}
	logger.Info("raftstore: log migrated from bbolt to the WAL", "from", boltPath, "to", walDir, "entries", last-first+1)
	return syncDir(filepath.Dir(walDir))
}
