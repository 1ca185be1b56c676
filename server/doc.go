// Package server is kern's HTTP API: JSON over HTTP, and server-sent events
// for following a run, so that any language can submit, follow, cancel and
// answer runs. New returns an http.Handler to mount in any mux; `kern serve
// --addr 127.0.0.1:8080` runs it on its own.
//
// Every /v1 route takes "Authorization: Bearer <secret>", a key made by
// db.CreateAPIKey (`kern keys create --tenant T --name N`). A key acts for its
// tenant (db.ForTenant): a run it submits is the tenant's, and every read,
// wait, stream, cancel, answer, list and schedule sees the tenant's runs
// only. Another tenant's run answers 404 exactly as an unknown id does; a
// cancel of it answers as a cancel of an id with no run (cancelled, no run)
// and touches nothing.
//
// The routes, their bodies and answers are in the OpenAPI 3.1 document
// served at /v1/openapi.json (openapi.json in this directory; a test holds
// it to the handlers). Errors are application/problem+json (RFC 9457). No
// response or log line carries a secret or SQL: errors from Postgres are
// logged with the request and answered as a plain 500.
//
// # Limits
//
// Request bodies are bounded (Config.MaxBodyBytes, 413 beyond). A wait is
// bounded (at most Config.MaxWait). An event stream sends a comment every
// Config.HeartbeatInterval so that proxies keep it open, and ends after the
// run's terminal event. The http.Server from HTTPServer sets read and idle
// timeouts, so a slow client cannot hold connections open (Slowloris).
//
// # Event streams
//
// Followers of one run share one reader of its event log (a hub per run in
// this process): a thousand browsers on one run cost one query per change,
// not a thousand. Each stream resumes after Last-Event-ID (what EventSource
// sends on a reconnect) or ?after=N, so a dropped connection loses and
// repeats nothing; resumed at a finished run's terminal event, it answers
// 204, on which EventSource stops reconnecting.
package server
