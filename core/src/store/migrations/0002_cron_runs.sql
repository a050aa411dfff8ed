-- Wharf store, schema version 2: the history of cron jobs' runs.
--
-- As in version 1, the full record is JSON in `body`; the other columns are what runs
-- are filtered, ordered and pruned by. Runs are deleted with their service by the
-- store itself.

CREATE TABLE cron_runs (
    -- Insertion order: runs are listed newest first by it.
    ord     INTEGER PRIMARY KEY AUTOINCREMENT,
    id      TEXT NOT NULL,
    project TEXT NOT NULL,
    service TEXT NOT NULL,
    job     TEXT NOT NULL,
    outcome TEXT NOT NULL,
    body    TEXT NOT NULL,
    CONSTRAINT cron_runs_id_unique UNIQUE (id)
);
CREATE INDEX cron_runs_by_job ON cron_runs (service, job, ord);
CREATE INDEX cron_runs_by_project ON cron_runs (project, ord);
CREATE INDEX cron_runs_by_outcome ON cron_runs (outcome);
