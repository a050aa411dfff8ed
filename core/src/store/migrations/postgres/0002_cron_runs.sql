-- Wharf store on PostgreSQL, schema version 2: the history of cron jobs' runs, as
-- in ../0002_cron_runs.sql.

CREATE TABLE cron_runs (
    -- Insertion order: runs are listed newest first by it.
    ord     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id      TEXT NOT NULL,
    project TEXT NOT NULL,
    service TEXT NOT NULL,
    job     TEXT COLLATE "C" NOT NULL,
    outcome TEXT NOT NULL,
    body    TEXT NOT NULL,
    CONSTRAINT cron_runs_id_unique UNIQUE (id)
);
CREATE INDEX cron_runs_by_job ON cron_runs (service, job, ord);
CREATE INDEX cron_runs_by_project ON cron_runs (project, ord);
CREATE INDEX cron_runs_by_outcome ON cron_runs (outcome);
