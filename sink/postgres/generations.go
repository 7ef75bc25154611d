package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/productstream/productstream/sink"
)

// createTable is the DDL of one generation table; %s is its quoted name.
const createTable = `CREATE TABLE IF NOT EXISTS %s (
	key        text PRIMARY KEY,
	namespace  text NOT NULL,
	product_id text NOT NULL,
	version    bigint NOT NULL,
	deleted    boolean NOT NULL,
	state      jsonb,
	updated_at timestamptz NOT NULL
)`

// createView points the readers' view (first %s) at a generation table
// (second %s).
const createView = `CREATE OR REPLACE VIEW %s AS
	SELECT key, namespace, product_id, version, state, updated_at FROM %s WHERE NOT deleted`

// ddl runs fn in a transaction holding the advisory lock of s's table, so
// that the DDL of several processes on one table takes turns.
func (s *Sink) ddl(ctx context.Context, fn func(tx pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", lockKey(s.table)); err != nil {
			return fmt.Errorf("locking: %w", err)
		}
		return fn(tx)
	})
}

// prepare creates what is missing: the metadata table and row (generation
// 1 live), the live and building generations' tables, and the view.
func (s *Sink) prepare(ctx context.Context) error {
	var g generations
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// The metadata table is shared by every sink: its creation takes a
		// lock of its own, before the table's (always in this order).
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", lockKey(metaTable)); err != nil {
			return fmt.Errorf("locking: %w", err)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+ident(metaTable)+` (
	name     text PRIMARY KEY,
	live     int NOT NULL,
	building int NOT NULL DEFAULT 0
)`); err != nil {
			return fmt.Errorf("creating %s: %w", metaTable, err)
		}
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", lockKey(s.table)); err != nil {
			return fmt.Errorf("locking: %w", err)
		}
		if _, err := tx.Exec(ctx, "INSERT INTO "+ident(metaTable)+" (name, live) VALUES ($1, 1) ON CONFLICT (name) DO NOTHING", s.table); err != nil {
			return fmt.Errorf("recording generation 1: %w", err)
		}
		var err error
		if g, err = readGenerations(ctx, tx, s.table, ""); err != nil {
			return err
		}
		for _, n := range g.targets() {
			if _, err := tx.Exec(ctx, fmt.Sprintf(createTable, ident(s.genTable(n)))); err != nil {
				return fmt.Errorf("creating generation %d: %w", n, err)
			}
		}
		var exists bool
		if err := tx.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", ident(s.viewName())).Scan(&exists); err != nil {
			return fmt.Errorf("looking for the view: %w", err)
		}
		if !exists {
			if _, err := tx.Exec(ctx, fmt.Sprintf(createView, ident(s.viewName()), ident(s.genTable(g.live)))); err != nil {
				return fmt.Errorf("creating the view: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.store(g)
	return nil
}

// readGenerations reads table's metadata row; lock is "" or a locking
// clause such as FOR UPDATE.
func readGenerations(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, table, lock string) (generations, error) {
	var g generations
	err := q.QueryRow(ctx, "SELECT live, building FROM "+ident(metaTable)+" WHERE name = $1 "+lock, table).Scan(&g.live, &g.building)
	if err != nil {
		return generations{}, fmt.Errorf("reading the generations of %q: %w", table, err)
	}
	return g, nil
}

// Generations returns the live generation and the one being built (0:
// none), as the database holds them now.
func (s *Sink) Generations(ctx context.Context) (live, building int, err error) {
	g, err := readGenerations(ctx, s.pool, s.table, "")
	if err != nil {
		return 0, 0, fmt.Errorf("postgres sink %q: %w", s.table, err)
	}
	if s.fixed == 0 {
		s.store(g)
	}
	return g.live, g.building, nil
}

// Begin creates generation n's table if it does not exist and records n as
// being built: from the next Write on, every writer of the sink writes to it
// as well as to the live one. It refuses the live generation
// (ErrLiveGeneration) and a second build (ErrBuilding).
func (s *Sink) Begin(ctx context.Context, n int) error {
	g, err := s.changeGenerations(ctx, n, func(tx pgx.Tx, g *generations) error {
		switch {
		case n == g.live:
			return fmt.Errorf("cannot begin generation %d: %w", n, ErrLiveGeneration)
		case g.building != 0 && g.building != n:
			return fmt.Errorf("cannot begin generation %d: generation %d: %w", n, g.building, ErrBuilding)
		}
		if _, err := tx.Exec(ctx, fmt.Sprintf(createTable, ident(s.genTable(n)))); err != nil {
			return fmt.Errorf("creating generation %d: %w", n, err)
		}
		g.building = n
		if _, err := tx.Exec(ctx, "UPDATE "+ident(metaTable)+" SET building = $2 WHERE name = $1", s.table, n); err != nil {
			return fmt.Errorf("recording generation %d as being built: %w", n, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.log.Info("postgres sink generation begun", "table", s.table, "generation", n, "live", g.live)
	return nil
}

// At returns a Sink that writes to generation n's table only, whatever the
// metadata says, sharing s's connections; closing it closes nothing. Its
// Held reads generation n.
func (s *Sink) At(n int) sink.Sink {
	return &Sink{pool: s.pool, table: s.table, log: s.log.With("generation", n), fixed: n}
}

// Switch points the view readers use at generation n and records n as live,
// in one transaction: a reader of the view sees either the old generation
// whole or the new one whole. The building mark is cleared when it was n's.
// Switching to a generation whose table does not exist fails with
// ErrNoGeneration.
func (s *Sink) Switch(ctx context.Context, n int) error {
	_, err := s.changeGenerations(ctx, n, func(tx pgx.Tx, g *generations) error {
		var exists bool
		if err := tx.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", ident(s.genTable(n))).Scan(&exists); err != nil {
			return fmt.Errorf("looking for generation %d: %w", n, err)
		}
		if !exists {
			return fmt.Errorf("cannot switch to generation %d: %w", n, ErrNoGeneration)
		}
		if _, err := tx.Exec(ctx, fmt.Sprintf(createView, ident(s.viewName()), ident(s.genTable(n)))); err != nil {
			return fmt.Errorf("pointing the view at generation %d: %w", n, err)
		}
		g.live = n
		if g.building == n {
			g.building = 0
		}
		if _, err := tx.Exec(ctx, "UPDATE "+ident(metaTable)+" SET live = $2, building = $3 WHERE name = $1", s.table, g.live, g.building); err != nil {
			return fmt.Errorf("recording generation %d as live: %w", n, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.log.Info("postgres sink switched", "table", s.table, "view", s.viewName(), "live", n)
	return nil
}

// Drop drops generation n's table, and its building mark if it was being
// built. It refuses the live generation (ErrLiveGeneration); dropping a
// generation that does not exist does nothing.
func (s *Sink) Drop(ctx context.Context, n int) error {
	_, err := s.changeGenerations(ctx, n, func(tx pgx.Tx, g *generations) error {
		if n == g.live {
			return fmt.Errorf("cannot drop generation %d: %w", n, ErrLiveGeneration)
		}
		if _, err := tx.Exec(ctx, "DROP TABLE IF EXISTS "+ident(s.genTable(n))); err != nil {
			return fmt.Errorf("dropping generation %d: %w", n, err)
		}
		if g.building == n {
			g.building = 0
			if _, err := tx.Exec(ctx, "UPDATE "+ident(metaTable)+" SET building = 0 WHERE name = $1", s.table); err != nil {
				return fmt.Errorf("clearing the building mark of generation %d: %w", n, err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.log.Info("postgres sink generation dropped", "table", s.table, "generation", n)
	return nil
}

// changeGenerations checks n, then runs change in a DDL transaction with
// the sink's generations row read and locked (change updates g as it
// updates the row), and keeps the result for the next Write.
func (s *Sink) changeGenerations(ctx context.Context, n int, change func(tx pgx.Tx, g *generations) error) (generations, error) {
	if err := s.checkGeneration(n); err != nil {
		return generations{}, err
	}
	var g generations
	err := s.ddl(ctx, func(tx pgx.Tx) error {
		var err error
		if g, err = readGenerations(ctx, tx, s.table, "FOR UPDATE"); err != nil {
			return err
		}
		return change(tx, &g)
	})
	if err != nil {
		return g, fmt.Errorf("postgres sink %q: %w", s.table, err)
	}
	if s.fixed == 0 {
		s.store(g)
	}
	return g, nil
}

// checkGeneration refuses generation numbers below 1 and those whose table
// name would be too long for PostgreSQL.
func (s *Sink) checkGeneration(n int) error {
	if n < 1 || len(s.genTable(n)) > maxIdent {
		return fmt.Errorf("postgres sink %q: generation %d: %w", s.table, n, ErrBadGeneration)
	}
	return nil
}
