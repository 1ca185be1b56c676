// Package migrations holds kern's own schema as plain SQL files, embedded so
// a binary can migrate a database without files on disk.
//
// The files are applied in order by tern (github.com/jackc/tern/v2), which
// records the version in the table kern_schema_version. db.Migrate applies
// them after River's own migrations, under one advisory lock, so concurrent
// migrators are safe. Each file is "up" SQL above the line
//
//	---- create above / drop below ----
//
// and "down" SQL below it. Never edit a file that has shipped: add a new one.
package migrations

import "embed"

// FS holds the migration files at its root: 001_runs.sql, 002_….sql, ….
//
//go:embed *.sql
var FS embed.FS
