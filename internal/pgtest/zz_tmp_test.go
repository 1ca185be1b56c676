package pgtest

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestZZCopyTiming(t *testing.T) {
	srv := sharedServer(t)
	ctx := context.Background()
	tmpl, err := srv.template(ctx, "zz", func(ctx context.Context, url string) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	for _, fc := range []bool{true, false} {
		srv.fileCopy = fc
		var c, d, k time.Duration
		for range 10 {
			s := time.Now()
			conn, _ := pgx.Connect(ctx, srv.AdminURL)
			conn.Close(ctx)
			k += time.Since(s)
			s = time.Now()
			u, err := srv.createDatabase(ctx, "kern_test", tmpl)
			if err != nil {
				t.Fatal(err)
			}
			c += time.Since(s)
			s = time.Now()
			if err := srv.DropDatabase(ctx, u); err != nil {
				t.Fatal(err)
			}
			d += time.Since(s)
		}
		t.Logf("fileCopy=%v connect %v create %v drop %v", fc, k/10, c/10, d/10)
	}
}
