-- Known state: one row per managed group and target.
CREATE TABLE groups (
    target      TEXT NOT NULL,
    key         TEXT NOT NULL,
    remote_id   TEXT NOT NULL,
    name        TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (target, key)
) WITHOUT ROWID;

-- Known members (role 'member') and owners (role 'owner') of managed groups.
CREATE TABLE members (
    target        TEXT NOT NULL,
    key           TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('member', 'owner')),
    member_id     TEXT NOT NULL,
    email         TEXT,
    owned         INTEGER NOT NULL DEFAULT 0,
    receive_call  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (target, key, role, member_id)
) WITHOUT ROWID;

-- Creates that were started but not confirmed: looked up (and adopted) before any retry.
CREATE TABLE intents (
    target      TEXT NOT NULL,
    key         TEXT NOT NULL,
    name        TEXT NOT NULL,
    run_id      INTEGER NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (target, key)
) WITHOUT ROWID;

-- Member-id resolution cache; member_id NULL records "not found" (re-asked on --full).
CREATE TABLE resolution (
    target       TEXT NOT NULL,
    email        TEXT NOT NULL,
    member_id    TEXT,
    resolved_at  TEXT NOT NULL,
    PRIMARY KEY (target, email)
) WITHOUT ROWID;

CREATE TABLE runs (
    id           INTEGER PRIMARY KEY,
    started_at   TEXT NOT NULL,
    finished_at  TEXT,
    command      TEXT NOT NULL,
    full         INTEGER NOT NULL DEFAULT 0,
    outcome      TEXT,
    exit_code    INTEGER,
    summary      TEXT,
    source_digest TEXT
);

-- Every call sent to a target.
CREATE TABLE calls (
    id          INTEGER PRIMARY KEY,
    run_id      INTEGER NOT NULL REFERENCES runs(id),
    at          TEXT NOT NULL,
    target      TEXT NOT NULL,
    group_key   TEXT,
    group_name  TEXT,
    op          TEXT NOT NULL,
    method      TEXT NOT NULL,
    path        TEXT NOT NULL,
    added       INTEGER NOT NULL DEFAULT 0,
    removed     INTEGER NOT NULL DEFAULT 0,
    status      INTEGER,
    outcome     TEXT NOT NULL CHECK (outcome IN ('ok', 'failed')),
    error       TEXT,
    latency_ms  INTEGER NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX calls_by_target ON calls (target, group_key, id);
CREATE INDEX calls_by_run ON calls (run_id, id);

-- Which people a call added (+) or removed (-), for `history` and `explain`.
CREATE TABLE call_members (
    call_id    INTEGER NOT NULL REFERENCES calls(id),
    change     TEXT NOT NULL CHECK (change IN ('+', '-')),
    member_id  TEXT NOT NULL,
    email      TEXT
);
CREATE INDEX call_members_by_email ON call_members (email);
