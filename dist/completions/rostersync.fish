# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_rostersync_global_optspecs
    string join \n config= log-format= v/verbose q/quiet h/help V/version
end

function __fish_rostersync_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_rostersync_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_rostersync_using_subcommand
    set -l cmd (__fish_rostersync_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c rostersync -n "__fish_rostersync_needs_command" -l config -d 'Config file (default: $ROSTERSYNC_CONFIG, ./config/rostersync.toml, /etc/rostersync/rostersync.toml)' -r -F
complete -c rostersync -n "__fish_rostersync_needs_command" -l log-format -d 'Log format on stderr (overrides [log] format)' -r -f -a "text\t''
json\t''"
complete -c rostersync -n "__fish_rostersync_needs_command" -s v -l verbose -d 'More logging (-v debug, -vv trace)'
complete -c rostersync -n "__fish_rostersync_needs_command" -s q -l quiet -d 'Less logging (warnings and errors only)'
complete -c rostersync -n "__fish_rostersync_needs_command" -s h -l help -d 'Print help'
complete -c rostersync -n "__fish_rostersync_needs_command" -s V -l version -d 'Print version'
complete -c rostersync -n "__fish_rostersync_needs_command" -f -a "check" -d 'Validate config and source; print a one-screen summary'
complete -c rostersync -n "__fish_rostersync_needs_command" -f -a "sync" -d 'One run, then exit'
complete -c rostersync -n "__fish_rostersync_needs_command" -f -a "daemon" -d 'Scheduler loop for systemd'
complete -c rostersync -n "__fish_rostersync_needs_command" -f -a "history" -d 'What past runs sent and how each call ended'
complete -c rostersync -n "__fish_rostersync_needs_command" -f -a "state" -d 'The known state: remote ids and members per group (`state copy` moves it)'
complete -c rostersync -n "__fish_rostersync_needs_command" -f -a "explain" -d 'Where a person is meant to be on every target, whether the known state agrees, and the last call that touched them'
complete -c rostersync -n "__fish_rostersync_needs_command" -f -a "completions" -d 'Print a shell completion script on stdout'
complete -c rostersync -n "__fish_rostersync_needs_command" -f -a "man" -d 'Write the man pages (roff), from the same definitions as --help'
complete -c rostersync -n "__fish_rostersync_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c rostersync -n "__fish_rostersync_using_subcommand check" -l output -d 'Output format of the summary' -r -f -a "text\t''
json\t''"
complete -c rostersync -n "__fish_rostersync_using_subcommand check" -l config -d 'Config file (default: $ROSTERSYNC_CONFIG, ./config/rostersync.toml, /etc/rostersync/rostersync.toml)' -r -F
complete -c rostersync -n "__fish_rostersync_using_subcommand check" -l log-format -d 'Log format on stderr (overrides [log] format)' -r -f -a "text\t''
json\t''"
complete -c rostersync -n "__fish_rostersync_using_subcommand check" -l online -d 'Also probe every target, read-only: authenticate, read one page of the group listing, say whether the answer was understood, latency and rate-limit headers'
complete -c rostersync -n "__fish_rostersync_using_subcommand check" -s v -l verbose -d 'More logging (-v debug, -vv trace)'
complete -c rostersync -n "__fish_rostersync_using_subcommand check" -s q -l quiet -d 'Less logging (warnings and errors only)'
complete -c rostersync -n "__fish_rostersync_using_subcommand check" -s h -l help -d 'Print help'
complete -c rostersync -n "__fish_rostersync_using_subcommand sync" -l target -d 'Only this target (repeatable)' -r
complete -c rostersync -n "__fish_rostersync_using_subcommand sync" -l only -d 'Only this person\'s additions and removals in groups that already exist (repeatable): a trial before a whole run. Creates, deletes, renames and other people\'s changes are listed as skipped' -r
complete -c rostersync -n "__fish_rostersync_using_subcommand sync" -l output -d 'Output format of the plan and the results' -r -f -a "text\t''
json\t''"
complete -c rostersync -n "__fish_rostersync_using_subcommand sync" -l save-plan -d 'With --dry-run: write the plan to FILE, to review and then apply with --plan' -r -F
complete -c rostersync -n "__fish_rostersync_using_subcommand sync" -l plan -d 'Apply exactly the plan in FILE; refused (exit 2) if the source or the known state changed since it was saved' -r -F
complete -c rostersync -n "__fish_rostersync_using_subcommand sync" -l config -d 'Config file (default: $ROSTERSYNC_CONFIG, ./config/rostersync.toml, /etc/rostersync/rostersync.toml)' -r -F
complete -c rostersync -n "__fish_rostersync_using_subcommand sync" -l log-format -d 'Log format on stderr (overrides [log] format)' -r -f -a "text\t''
json\t''"
complete -c rostersync -n "__fish_rostersync_using_subcommand sync" -l dry-run -d 'Print the plan and change nothing'
complete -c rostersync -n "__fish_rostersync_using_subcommand sync" -l full -d 'Read every managed group back first and repair drift'
complete -c rostersync -n "__fish_rostersync_using_subcommand sync" -l allow-mass-removal -d 'Let this run remove more than the safety guard allows'
complete -c rostersync -n "__fish_rostersync_using_subcommand sync" -s v -l verbose -d 'More logging (-v debug, -vv trace)'
complete -c rostersync -n "__fish_rostersync_using_subcommand sync" -s q -l quiet -d 'Less logging (warnings and errors only)'
complete -c rostersync -n "__fish_rostersync_using_subcommand sync" -s h -l help -d 'Print help'
complete -c rostersync -n "__fish_rostersync_using_subcommand daemon" -l config -d 'Config file (default: $ROSTERSYNC_CONFIG, ./config/rostersync.toml, /etc/rostersync/rostersync.toml)' -r -F
complete -c rostersync -n "__fish_rostersync_using_subcommand daemon" -l log-format -d 'Log format on stderr (overrides [log] format)' -r -f -a "text\t''
json\t''"
complete -c rostersync -n "__fish_rostersync_using_subcommand daemon" -s v -l verbose -d 'More logging (-v debug, -vv trace)'
complete -c rostersync -n "__fish_rostersync_using_subcommand daemon" -s q -l quiet -d 'Less logging (warnings and errors only)'
complete -c rostersync -n "__fish_rostersync_using_subcommand daemon" -s h -l help -d 'Print help'
complete -c rostersync -n "__fish_rostersync_using_subcommand history" -l limit -d 'At most this many calls (newest first)' -r
complete -c rostersync -n "__fish_rostersync_using_subcommand history" -l target -d 'Only calls sent to this target' -r
complete -c rostersync -n "__fish_rostersync_using_subcommand history" -l group -d 'Group key or name' -r
complete -c rostersync -n "__fish_rostersync_using_subcommand history" -l run -d 'Only this run (its id, as `history` lists it)' -r
complete -c rostersync -n "__fish_rostersync_using_subcommand history" -l output -d 'Output format' -r -f -a "text\t''
json\t''"
complete -c rostersync -n "__fish_rostersync_using_subcommand history" -l config -d 'Config file (default: $ROSTERSYNC_CONFIG, ./config/rostersync.toml, /etc/rostersync/rostersync.toml)' -r -F
complete -c rostersync -n "__fish_rostersync_using_subcommand history" -l log-format -d 'Log format on stderr (overrides [log] format)' -r -f -a "text\t''
json\t''"
complete -c rostersync -n "__fish_rostersync_using_subcommand history" -s v -l verbose -d 'More logging (-v debug, -vv trace)'
complete -c rostersync -n "__fish_rostersync_using_subcommand history" -s q -l quiet -d 'Less logging (warnings and errors only)'
complete -c rostersync -n "__fish_rostersync_using_subcommand history" -s h -l help -d 'Print help'
complete -c rostersync -n "__fish_rostersync_using_subcommand state; and not __fish_seen_subcommand_from copy help" -l target -d 'Only this target' -r
complete -c rostersync -n "__fish_rostersync_using_subcommand state; and not __fish_seen_subcommand_from copy help" -l output -d 'Output format' -r -f -a "text\t''
json\t''"
complete -c rostersync -n "__fish_rostersync_using_subcommand state; and not __fish_seen_subcommand_from copy help" -l config -d 'Config file (default: $ROSTERSYNC_CONFIG, ./config/rostersync.toml, /etc/rostersync/rostersync.toml)' -r -F
complete -c rostersync -n "__fish_rostersync_using_subcommand state; and not __fish_seen_subcommand_from copy help" -l log-format -d 'Log format on stderr (overrides [log] format)' -r -f -a "text\t''
json\t''"
complete -c rostersync -n "__fish_rostersync_using_subcommand state; and not __fish_seen_subcommand_from copy help" -s v -l verbose -d 'More logging (-v debug, -vv trace)'
complete -c rostersync -n "__fish_rostersync_using_subcommand state; and not __fish_seen_subcommand_from copy help" -s q -l quiet -d 'Less logging (warnings and errors only)'
complete -c rostersync -n "__fish_rostersync_using_subcommand state; and not __fish_seen_subcommand_from copy help" -s h -l help -d 'Print help'
complete -c rostersync -n "__fish_rostersync_using_subcommand state; and not __fish_seen_subcommand_from copy help" -f -a "copy" -d 'Copies the whole state (known groups, members, intents, lookups, facts, history) to another backend: from SQLite to PostgreSQL to go to two nodes without a `--full` re-read of every vendor, or back. Refuses a destination that already holds a state. Holds the source\'s lock (or lease) while it copies, so no run writes meanwhile'
complete -c rostersync -n "__fish_rostersync_using_subcommand state; and not __fish_seen_subcommand_from copy help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c rostersync -n "__fish_rostersync_using_subcommand state; and __fish_seen_subcommand_from copy" -l to -d 'The destination: `postgres://user@host/db` or a SQLite file path' -r
complete -c rostersync -n "__fish_rostersync_using_subcommand state; and __fish_seen_subcommand_from copy" -l password-file -d 'The destination\'s password, from this file (PostgreSQL)' -r -F
complete -c rostersync -n "__fish_rostersync_using_subcommand state; and __fish_seen_subcommand_from copy" -l password-env -d 'The destination\'s password, from this environment variable (PostgreSQL)' -r
complete -c rostersync -n "__fish_rostersync_using_subcommand state; and __fish_seen_subcommand_from copy" -l ca-file -d 'CA certificates (PEM) to verify the destination server with (PostgreSQL; TLS is then required)' -r -F
complete -c rostersync -n "__fish_rostersync_using_subcommand state; and __fish_seen_subcommand_from copy" -l config -d 'Config file (default: $ROSTERSYNC_CONFIG, ./config/rostersync.toml, /etc/rostersync/rostersync.toml)' -r -F
complete -c rostersync -n "__fish_rostersync_using_subcommand state; and __fish_seen_subcommand_from copy" -l log-format -d 'Log format on stderr (overrides [log] format)' -r -f -a "text\t''
json\t''"
complete -c rostersync -n "__fish_rostersync_using_subcommand state; and __fish_seen_subcommand_from copy" -s v -l verbose -d 'More logging (-v debug, -vv trace)'
complete -c rostersync -n "__fish_rostersync_using_subcommand state; and __fish_seen_subcommand_from copy" -s q -l quiet -d 'Less logging (warnings and errors only)'
complete -c rostersync -n "__fish_rostersync_using_subcommand state; and __fish_seen_subcommand_from copy" -s h -l help -d 'Print help'
complete -c rostersync -n "__fish_rostersync_using_subcommand state; and __fish_seen_subcommand_from help" -f -a "copy" -d 'Copies the whole state (known groups, members, intents, lookups, facts, history) to another backend: from SQLite to PostgreSQL to go to two nodes without a `--full` re-read of every vendor, or back. Refuses a destination that already holds a state. Holds the source\'s lock (or lease) while it copies, so no run writes meanwhile'
complete -c rostersync -n "__fish_rostersync_using_subcommand state; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c rostersync -n "__fish_rostersync_using_subcommand explain" -l output -d 'Output format' -r -f -a "text\t''
json\t''"
complete -c rostersync -n "__fish_rostersync_using_subcommand explain" -l config -d 'Config file (default: $ROSTERSYNC_CONFIG, ./config/rostersync.toml, /etc/rostersync/rostersync.toml)' -r -F
complete -c rostersync -n "__fish_rostersync_using_subcommand explain" -l log-format -d 'Log format on stderr (overrides [log] format)' -r -f -a "text\t''
json\t''"
complete -c rostersync -n "__fish_rostersync_using_subcommand explain" -l online -d 'Also ask each target, read-only, what it holds for them now, and mark every disagreement with the known state'
complete -c rostersync -n "__fish_rostersync_using_subcommand explain" -s v -l verbose -d 'More logging (-v debug, -vv trace)'
complete -c rostersync -n "__fish_rostersync_using_subcommand explain" -s q -l quiet -d 'Less logging (warnings and errors only)'
complete -c rostersync -n "__fish_rostersync_using_subcommand explain" -s h -l help -d 'Print help'
complete -c rostersync -n "__fish_rostersync_using_subcommand completions" -l config -d 'Config file (default: $ROSTERSYNC_CONFIG, ./config/rostersync.toml, /etc/rostersync/rostersync.toml)' -r -F
complete -c rostersync -n "__fish_rostersync_using_subcommand completions" -l log-format -d 'Log format on stderr (overrides [log] format)' -r -f -a "text\t''
json\t''"
complete -c rostersync -n "__fish_rostersync_using_subcommand completions" -s v -l verbose -d 'More logging (-v debug, -vv trace)'
complete -c rostersync -n "__fish_rostersync_using_subcommand completions" -s q -l quiet -d 'Less logging (warnings and errors only)'
complete -c rostersync -n "__fish_rostersync_using_subcommand completions" -s h -l help -d 'Print help'
complete -c rostersync -n "__fish_rostersync_using_subcommand man" -l out-dir -d 'Write rostersync.1 and one page per command into DIR (default: rostersync.1 on stdout)' -r -F
complete -c rostersync -n "__fish_rostersync_using_subcommand man" -l config -d 'Config file (default: $ROSTERSYNC_CONFIG, ./config/rostersync.toml, /etc/rostersync/rostersync.toml)' -r -F
complete -c rostersync -n "__fish_rostersync_using_subcommand man" -l log-format -d 'Log format on stderr (overrides [log] format)' -r -f -a "text\t''
json\t''"
complete -c rostersync -n "__fish_rostersync_using_subcommand man" -s v -l verbose -d 'More logging (-v debug, -vv trace)'
complete -c rostersync -n "__fish_rostersync_using_subcommand man" -s q -l quiet -d 'Less logging (warnings and errors only)'
complete -c rostersync -n "__fish_rostersync_using_subcommand man" -s h -l help -d 'Print help'
complete -c rostersync -n "__fish_rostersync_using_subcommand help; and not __fish_seen_subcommand_from check sync daemon history state explain completions man help" -f -a "check" -d 'Validate config and source; print a one-screen summary'
complete -c rostersync -n "__fish_rostersync_using_subcommand help; and not __fish_seen_subcommand_from check sync daemon history state explain completions man help" -f -a "sync" -d 'One run, then exit'
complete -c rostersync -n "__fish_rostersync_using_subcommand help; and not __fish_seen_subcommand_from check sync daemon history state explain completions man help" -f -a "daemon" -d 'Scheduler loop for systemd'
complete -c rostersync -n "__fish_rostersync_using_subcommand help; and not __fish_seen_subcommand_from check sync daemon history state explain completions man help" -f -a "history" -d 'What past runs sent and how each call ended'
complete -c rostersync -n "__fish_rostersync_using_subcommand help; and not __fish_seen_subcommand_from check sync daemon history state explain completions man help" -f -a "state" -d 'The known state: remote ids and members per group (`state copy` moves it)'
complete -c rostersync -n "__fish_rostersync_using_subcommand help; and not __fish_seen_subcommand_from check sync daemon history state explain completions man help" -f -a "explain" -d 'Where a person is meant to be on every target, whether the known state agrees, and the last call that touched them'
complete -c rostersync -n "__fish_rostersync_using_subcommand help; and not __fish_seen_subcommand_from check sync daemon history state explain completions man help" -f -a "completions" -d 'Print a shell completion script on stdout'
complete -c rostersync -n "__fish_rostersync_using_subcommand help; and not __fish_seen_subcommand_from check sync daemon history state explain completions man help" -f -a "man" -d 'Write the man pages (roff), from the same definitions as --help'
complete -c rostersync -n "__fish_rostersync_using_subcommand help; and not __fish_seen_subcommand_from check sync daemon history state explain completions man help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c rostersync -n "__fish_rostersync_using_subcommand help; and __fish_seen_subcommand_from state" -f -a "copy" -d 'Copies the whole state (known groups, members, intents, lookups, facts, history) to another backend: from SQLite to PostgreSQL to go to two nodes without a `--full` re-read of every vendor, or back. Refuses a destination that already holds a state. Holds the source\'s lock (or lease) while it copies, so no run writes meanwhile'
