-- What a target's answers have shown about the target itself (the path where a DeepCall
-- listing puts its records, the form of member removal a SCIM server takes, its
-- ServiceProviderConfig), or what the operator must look at before it is trusted again.
-- Not known state: a fact never moves the generation, and a saved plan does not cover it.
CREATE TABLE target_facts (
    target      TEXT NOT NULL,
    name        TEXT NOT NULL,
    value       TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (target, name)
) WITHOUT ROWID;
