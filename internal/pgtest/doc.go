// Package pgtest finds or starts a real Postgres server for tests and the
// offline demo, and hands out isolated databases on it.
//
// A server is discovered once per process, in this order:
//
//  1. DATABASE_URL, an admin URL to a server where we may CREATE DATABASE;
//  2. a testcontainers-go container, but only when a Docker engine answers
//     a quick ping (set KERN_TEST_NO_DOCKER=1 to skip);
//  3. a throwaway cluster built with the local initdb and pg_ctl, in
//     /dev/shm when that is a roomy tmpfs, deleted by Stop or, if the
//     process is killed, by a small watchdog process.
//
// Tests get a fresh database each (NewDatabase), or a copy of a per-process
// template that a migration function prepared once (NewMigratedDatabase), so
// they can run in parallel without seeing each other's rows. Packages that use
// pgtest should call Main from TestMain so the server this process started is
// stopped and its templates dropped when the tests finish.
//
// Tests that must control the server itself use StartLocal, which always
// builds a private initdb cluster, and Server.Restart, which takes it down
// (dropping every client connection) and brings it back on the same port to
// simulate an outage. Benchmarks that must measure what users see use
// StartStock: the same kind of private cluster, but with Postgres's default
// settings (fsync on) and its data on disk.
//
// Tests that run kern through a connection pooler use StartBouncer (or
// NewBouncer, which skips the test when PgBouncer is not installed): a
// private PgBouncer process in front of the server a database URL points at,
// in session, transaction or statement pool mode, with its URL, its log and
// whether it is still alive (PgBouncer 1.18 can crash) at hand. Like the
// initdb clusters it runs as an unprivileged account when we are root, and a
// watchdog kills it if the test process dies without stopping it. PgBouncer
// accepts but does not apply a search_path sent at connection time, so code
// behind it must get its schema from the role's search_path.
//
// Nothing is shared between processes: parallel `go test` packages each get
// their own templates (and, without DATABASE_URL, their own server), so they
// never contend for one template. Databases left behind by killed runs on a
// DATABASE_URL server are dropped after two hours by the next run.
package pgtest
