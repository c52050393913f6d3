-- The no-op shortcut (SPEC 9): what each run started from, and a generation of the known
-- state that every change to it moves.
ALTER TABLE runs ADD COLUMN config_digest TEXT;
-- The state generation when the run finished (set only for runs in which every target
-- converged and no target was left out).
ALTER TABLE runs ADD COLUMN state_generation INTEGER;
ALTER TABLE runs ADD COLUMN converged INTEGER NOT NULL DEFAULT 0;
-- Set on a run that stopped at the shortcut: the run whose result it repeats.
ALTER TABLE runs ADD COLUMN unchanged_since INTEGER;

CREATE TABLE generation (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    n   INTEGER NOT NULL
);
INSERT INTO generation (id, n) VALUES (1, 0);

-- Every write to the known state (groups, members, intents, the resolution cache) moves
-- the generation, whoever makes it: a trigger, so no code path can forget.
CREATE TRIGGER generation_groups_i AFTER INSERT ON groups BEGIN UPDATE generation SET n = n + 1; END;
CREATE TRIGGER generation_groups_u AFTER UPDATE ON groups BEGIN UPDATE generation SET n = n + 1; END;
CREATE TRIGGER generation_groups_d AFTER DELETE ON groups BEGIN UPDATE generation SET n = n + 1; END;
CREATE TRIGGER generation_members_i AFTER INSERT ON members BEGIN UPDATE generation SET n = n + 1; END;
CREATE TRIGGER generation_members_u AFTER UPDATE ON members BEGIN UPDATE generation SET n = n + 1; END;
CREATE TRIGGER generation_members_d AFTER DELETE ON members BEGIN UPDATE generation SET n = n + 1; END;
CREATE TRIGGER generation_intents_i AFTER INSERT ON intents BEGIN UPDATE generation SET n = n + 1; END;
CREATE TRIGGER generation_intents_u AFTER UPDATE ON intents BEGIN UPDATE generation SET n = n + 1; END;
CREATE TRIGGER generation_intents_d AFTER DELETE ON intents BEGIN UPDATE generation SET n = n + 1; END;
CREATE TRIGGER generation_resolution_i AFTER INSERT ON resolution BEGIN UPDATE generation SET n = n + 1; END;
CREATE TRIGGER generation_resolution_u AFTER UPDATE ON resolution BEGIN UPDATE generation SET n = n + 1; END;
CREATE TRIGGER generation_resolution_d AFTER DELETE ON resolution BEGIN UPDATE generation SET n = n + 1; END;
