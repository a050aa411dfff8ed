-- Wharf store, schema version 1.
--
-- Every table keeps the full record as JSON in `body`; the other columns are copies
-- of the fields the store looks records up by, filters on, orders by or keeps unique.
-- Cascading deletes are done by the store itself (in one transaction), so that it
-- removes exactly what the in-memory store removes.

CREATE TABLE projects (
    id   TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    body TEXT NOT NULL,
    CONSTRAINT projects_name_unique UNIQUE (name)
);

CREATE TABLE environments (
    id      TEXT PRIMARY KEY NOT NULL,
    project TEXT NOT NULL REFERENCES projects (id),
    name    TEXT NOT NULL,
    body    TEXT NOT NULL,
    CONSTRAINT environments_name_unique UNIQUE (project, name)
);

CREATE TABLE services (
    id          TEXT PRIMARY KEY NOT NULL,
    project     TEXT NOT NULL REFERENCES projects (id),
    environment TEXT,
    name        TEXT NOT NULL,
    body        TEXT NOT NULL
);
-- NULLs are distinct in a UNIQUE constraint, so map "no environment" to an empty
-- blob (never equal to any text id).
CREATE UNIQUE INDEX services_name_unique ON services (project, ifnull(environment, X''), name);
CREATE INDEX services_by_project ON services (project, name);
CREATE INDEX services_by_environment ON services (environment);

CREATE TABLE deployments (
    -- Insertion order: deployments are listed newest first by it (never by timestamps).
    ord     INTEGER PRIMARY KEY AUTOINCREMENT,
    id      TEXT NOT NULL,
    project TEXT NOT NULL,
    service TEXT NOT NULL,
    state   TEXT NOT NULL,
    active  INTEGER NOT NULL,
    version INTEGER NOT NULL,
    body    TEXT NOT NULL,
    CONSTRAINT deployments_id_unique UNIQUE (id)
);
CREATE INDEX deployments_by_project ON deployments (project, ord);
CREATE INDEX deployments_by_service ON deployments (service, ord);
CREATE INDEX deployments_by_state ON deployments (state);

CREATE TABLE releases (
    id         TEXT PRIMARY KEY NOT NULL,
    project    TEXT NOT NULL,
    service    TEXT NOT NULL REFERENCES services (id),
    number     INTEGER NOT NULL,
    deployment TEXT NOT NULL,
    body       TEXT NOT NULL,
    CONSTRAINT releases_number_unique UNIQUE (service, number)
);
CREATE INDEX releases_by_deployment ON releases (deployment);

CREATE TABLE events (
    -- AUTOINCREMENT: a sequence number is never reused, even after deletes.
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    deployment TEXT NOT NULL,
    service    TEXT NOT NULL,
    body       TEXT NOT NULL
);
CREATE INDEX events_by_deployment ON events (deployment, seq);
CREATE INDEX events_by_service ON events (service);
