package db_test

import (
	"context"
	"fmt"

	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/kerntest"
)

// Behind a transaction pooler (PgBouncer pool_mode=transaction) give kern
// the pooler's URL and a direct one: runs go through the pooler, LISTEN,
// workers' liveness and Migrate go direct. Open finds the pooler out by
// itself; WithPoolMode says so instead (here, as the example has no
// pooler, both URLs reach Postgres itself).
func ExampleWithDirectURL() {
	ctx := context.Background()
	migrated, closeDB := kerntest.ExampleDB()
	defer closeDB()
	url := migrated.Pool().Config().ConnString()
	pooledURL, directURL := url, url // e.g. postgres://app@pgbouncer:6432/app and postgres://app@db:5432/app

	d, err := db.Open(ctx, pooledURL, db.WithDirectURL(directURL), db.WithPoolMode(db.PoolModeTransaction))
	if err != nil {
		panic(err)
	}
	defer d.Close()
	fmt.Println("pool mode:", d.PoolMode(), "| listens:", d.ListensForNotifications())

	plain, err := db.Open(ctx, pooledURL, db.WithPoolMode(db.PoolModeTransaction))
	if err != nil {
		panic(err)
	}
	defer plain.Close()
	fmt.Println("without a direct URL:", plain.ListensForNotifications(), "| migrate:", plain.Migrate(ctx) != nil)

	// Output:
	// pool mode: transaction | listens: true
	// without a direct URL: false | migrate: true
}
