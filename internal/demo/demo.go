// Package demo gives the cookbook programs their surroundings: a database
// and a model. With OPENAI_API_KEY set the model is the real endpoint
// (OPENAI_BASE_URL and KERN_MODEL optional); otherwise an in-process fake
// OpenAI-compatible server. With DATABASE_URL set that database is used;
// otherwise a throwaway Postgres (see internal/pgtest) with a fresh database.
package demo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/kern-go/kern/agent"
	"github.com/kern-go/kern/db"
	"github.com/kern-go/kern/internal/fakellm"
	"github.com/kern-go/kern/internal/pgtest"
)

// Env is what a cookbook program runs against. Close releases all of it.
type Env struct {
	DB      *db.DB
	Model   agent.Model
	Fake    *fakellm.Server // nil when talking to a real endpoint
	closers []func()
}

// Setup opens (and migrates) the database and picks the model.
func Setup(ctx context.Context, logger *slog.Logger) (_ *Env, err error) {
	e := &Env{}
	defer func() {
		if err != nil {
			e.Close()
		}
	}()

	url := os.Getenv("DATABASE_URL")
	if url == "" {
		srv, err := pgtest.Start(ctx)
		if err != nil {
			return nil, err
		}
		e.closers = append(e.closers, func() { _ = srv.Stop(context.Background()) })
		url, err = srv.CreateDatabase(ctx, "kern_demo")
		if err != nil {
			return nil, err
		}
		e.closers = append(e.closers, func() { _ = srv.DropDatabase(context.Background(), url) })
		logger.Info("using a throwaway Postgres", slog.String("kind", srv.Kind))
	} else {
		logger.Info("using DATABASE_URL")
	}
	e.DB, err = db.Open(ctx, url)
	if err != nil {
		return nil, err
	}
	e.closers = append(e.closers, e.DB.Close)
	if err := e.DB.Migrate(ctx); err != nil {
		return nil, err
	}

	if os.Getenv("OPENAI_API_KEY") != "" || os.Getenv("OPENAI_BASE_URL") != "" {
		id := os.Getenv("KERN_MODEL")
		if id == "" {
			id = "gpt-5-mini"
		}
		// The same rules as a worker's: a local OPENAI_BASE_URL needs no key.
		chat, err := agent.OpenAIChat{ID: id}.Resolve()
		if err != nil {
			return nil, err
		}
		e.Model = chat
		logger.Info("using a real model endpoint", slog.String("model", id))
		return e, nil
	}
	e.Fake = fakellm.New()
	base, stop, err := e.Fake.Start()
	if err != nil {
		return nil, fmt.Errorf("start fake model: %w", err)
	}
	e.closers = append(e.closers, stop)
	e.Model = agent.OpenAIChat{Client: agent.NewOpenAIClient("offline", base), ID: "fake-model"}
	logger.Info("using the offline fake model (set OPENAI_API_KEY or OPENAI_BASE_URL for a real one)", slog.String("url", base))
	return e, nil
}

// Close releases everything Setup made, in reverse order.
func (e *Env) Close() {
	for i := len(e.closers) - 1; i >= 0; i-- {
		e.closers[i]()
	}
	e.closers = nil
}

// ErrScenario marks a scenario whose outcome was not what it promises.
var ErrScenario = errors.New("scenario failed")
