-- Wharf store on PostgreSQL, schema version 1: the same tables, columns and
-- constraints as the SQLite schema (../0001_initial.sql), in PostgreSQL's dialect.
--
-- Every table keeps the full record as JSON text in `body` (TEXT, not JSONB: JSONB
-- refuses "\u0000" and reorders keys); the other columns are copies of the fields the
-- store looks records up by, filters on, orders by or keeps unique. Cascading deletes
-- are done by the store itself (in one transaction), so that it removes exactly what
-- the in-memory store removes. Names are compared and sorted bytewise (COLLATE "C"),
-- as Rust and SQLite do.

CREATE TABLE projects (
    id   TEXT PRIMARY KEY,
    name TEXT COLLATE "C" NOT NULL,
    body TEXT NOT NULL,
    CONSTRAINT projects_name_unique UNIQUE (name)
);

CREATE TABLE environments (
    id      TEXT PRIMARY KEY,
    project TEXT NOT NULL REFERENCES projects (id),
    name    TEXT COLLATE "C" NOT NULL,
    body    TEXT NOT NULL,
    CONSTRAINT environments_name_unique UNIQUE (project, name)
);

CREATE TABLE services (
    id          TEXT PRIMARY KEY,
    project     TEXT NOT NULL REFERENCES projects (id),
    environment TEXT,
    name        TEXT COLLATE "C" NOT NULL,
    body        TEXT NOT NULL
);
-- NULLs are distinct in a UNIQUE constraint, so map "no environment" to '' (never a
-- valid id).
CREATE UNIQUE INDEX services_name_unique ON services (project, coalesce(environment, ''), name);
CREATE INDEX services_by_project ON services (project, name);
CREATE INDEX services_by_environment ON services (environment);

CREATE TABLE deployments (
    -- Insertion order: deployments are listed newest first by it (never by timestamps).
    ord     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id      TEXT NOT NULL,
    project TEXT NOT NULL,
    service TEXT NOT NULL,
    state   TEXT NOT NULL,
    active  BOOLEAN NOT NULL,
    version BIGINT NOT NULL,
    body    TEXT NOT NULL,
    CONSTRAINT deployments_id_unique UNIQUE (id)
);
CREATE INDEX deployments_by_project ON deployments (project, ord);
CREATE INDEX deployments_by_service ON deployments (service, ord);
CREATE INDEX deployments_by_state ON deployments (state);

CREATE TABLE releases (
    id         TEXT PRIMARY KEY,
    project    TEXT NOT NULL,
    service    TEXT NOT NULL REFERENCES services (id),
    number     BIGINT NOT NULL,
    deployment TEXT NOT NULL,
    body       TEXT NOT NULL,
    CONSTRAINT releases_number_unique UNIQUE (service, number)
);
CREATE INDEX releases_by_deployment ON releases (deployment);

-- The last event sequence number handed out. One row, updated in the appending
-- transaction: its row lock makes appends commit in sequence order, so a reader
-- following `seq > after` never skips an event committed late with a lower number
-- (which a plain SEQUENCE would allow). Never goes back, even after deletes.
CREATE TABLE event_seq (
    one  BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
    last BIGINT NOT NULL
);
INSERT INTO event_seq (one, last) VALUES (TRUE, 0);

CREATE TABLE events (
    seq        BIGINT PRIMARY KEY,
    deployment TEXT NOT NULL,
    service    TEXT NOT NULL,
    body       TEXT NOT NULL
);
CREATE INDEX events_by_deployment ON events (deployment, seq);
CREATE INDEX events_by_service ON events (service);
