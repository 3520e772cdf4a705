# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_apimail_global_optspecs
    string join \n config= v/verbose debug h/help V/version
end

function __fish_apimail_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_apimail_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_apimail_using_subcommand
    set -l cmd (__fish_apimail_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c apimail -n "__fish_apimail_needs_command" -l config -d 'Configuration file' -r -F
complete -c apimail -n "__fish_apimail_needs_command" -s v -l verbose -d 'Say more: -v shows progress and retries'
complete -c apimail -n "__fish_apimail_needs_command" -l debug -d 'Log every HTTP request and response (secrets are redacted)'
complete -c apimail -n "__fish_apimail_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c apimail -n "__fish_apimail_needs_command" -s V -l version -d 'Print version'
complete -c apimail -n "__fish_apimail_needs_command" -f -a "send" -d 'Compose a message and send it (or, with --dry-run, print it)'
complete -c apimail -n "__fish_apimail_needs_command" -f -a "auth" -d 'Authorize accounts, and inspect or remove their tokens'
complete -c apimail -n "__fish_apimail_needs_command" -f -a "sendmail" -d 'Work as sendmail: send the message on standard input (drop-in for programs)'
complete -c apimail -n "__fish_apimail_needs_command" -f -a "queue" -d 'List, flush, retry or drop messages waiting in the outbox'
complete -c apimail -n "__fish_apimail_needs_command" -f -a "doctor" -d 'Check the configuration, tokens, network, clock and queue, and explain any problem'
complete -c apimail -n "__fish_apimail_needs_command" -f -a "log" -d 'Show the delivery journal: what was sent, queued, held or failed, and why'
complete -c apimail -n "__fish_apimail_needs_command" -f -a "relay" -d 'Run an SMTP relay for printers, scanners and applications that only speak SMTP'
complete -c apimail -n "__fish_apimail_needs_command" -f -a "merge" -d 'Mail one letter to many: a CSV or .xlsx sheet and a template (a dry run without --send)'
complete -c apimail -n "__fish_apimail_needs_command" -f -a "admin" -d 'Serve the admin console (log, queue, accounts, API); manage its users and tokens'
complete -c apimail -n "__fish_apimail_needs_command" -f -a "store" -d 'Set up the shared PostgreSQL store (outbox, journal, pacing) for several machines'
complete -c apimail -n "__fish_apimail_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c apimail -n "__fish_apimail_using_subcommand send" -l from -d 'Sender, e.g. \'Ann <ann@example.com>\' (default: the account\'s address)' -r
complete -c apimail -n "__fish_apimail_using_subcommand send" -l account -d 'The account to send from (default: $APIMAIL_ACCOUNT, else the configured default)' -r
complete -c apimail -n "__fish_apimail_using_subcommand send" -l provider -d 'With no account named, send with this provider\'s environment credentials' -r -f -a "gmail\t''
graph\t''"
complete -c apimail -n "__fish_apimail_using_subcommand send" -l to -d 'Recipient (repeatable)' -r
complete -c apimail -n "__fish_apimail_using_subcommand send" -l cc -d 'Carbon-copy recipient (repeatable)' -r
complete -c apimail -n "__fish_apimail_using_subcommand send" -l bcc -d 'Blind-copy recipient (repeatable); hidden from other recipients' -r
complete -c apimail -n "__fish_apimail_using_subcommand send" -l reply-to -d 'Where replies should go (repeatable)' -r
complete -c apimail -n "__fish_apimail_using_subcommand send" -l sender -d 'The Sender header, when someone sends on behalf of --from' -r
complete -c apimail -n "__fish_apimail_using_subcommand send" -s s -l subject -d 'Subject line' -r
complete -c apimail -n "__fish_apimail_using_subcommand send" -l text -d 'Plain-text body' -r
complete -c apimail -n "__fish_apimail_using_subcommand send" -l text-file -d 'Read the plain-text body from a file (UTF-8)' -r -F
complete -c apimail -n "__fish_apimail_using_subcommand send" -l html-file -d 'Read an HTML body from a file (UTF-8); with a text body, both are sent as alternatives' -r -F
complete -c apimail -n "__fish_apimail_using_subcommand send" -s a -l attach -d 'Attach a file (repeatable); append \';type=MIME\' to override the guessed type' -r
complete -c apimail -n "__fish_apimail_using_subcommand send" -l inline -d 'Embed a file the HTML refers to as cid:FILENAME (repeatable)' -r
complete -c apimail -n "__fish_apimail_using_subcommand send" -l header -d 'Extra header, as \'Name: value\' (repeatable)' -r
complete -c apimail -n "__fish_apimail_using_subcommand send" -l in-reply-to -d 'Message-ID of the message being replied to' -r
complete -c apimail -n "__fish_apimail_using_subcommand send" -l references -d 'Message-IDs of the thread, oldest first (repeatable)' -r
complete -c apimail -n "__fish_apimail_using_subcommand send" -l message-id -d 'Use this Message-ID instead of a generated one' -r
complete -c apimail -n "__fish_apimail_using_subcommand send" -l charset -d 'Charset of text parts and encoded headers' -r -f -a "utf-8\t''
iso-2022-jp\t''"
complete -c apimail -n "__fish_apimail_using_subcommand send" -s o -l output -d 'With --dry-run, write the message to FILE instead of standard output' -r -F
complete -c apimail -n "__fish_apimail_using_subcommand send" -l config -d 'Configuration file' -r -F
complete -c apimail -n "__fish_apimail_using_subcommand send" -l json -d 'Print the receipt as one JSON object'
complete -c apimail -n "__fish_apimail_using_subcommand send" -l queue -d 'Only put the message in the outbox; `apimail queue flush` (or the next send) sends it'
complete -c apimail -n "__fish_apimail_using_subcommand send" -l dry-run -d 'Print the exact message bytes instead of sending; needs no account or network'
complete -c apimail -n "__fish_apimail_using_subcommand send" -s v -l verbose -d 'Say more: -v shows progress and retries'
complete -c apimail -n "__fish_apimail_using_subcommand send" -l debug -d 'Log every HTTP request and response (secrets are redacted)'
complete -c apimail -n "__fish_apimail_using_subcommand send" -s h -l help -d 'Print help'
complete -c apimail -n "__fish_apimail_using_subcommand auth; and not __fish_seen_subcommand_from login import-smail status logout help" -l config -d 'Configuration file' -r -F
complete -c apimail -n "__fish_apimail_using_subcommand auth; and not __fish_seen_subcommand_from login import-smail status logout help" -s v -l verbose -d 'Say more: -v shows progress and retries'
complete -c apimail -n "__fish_apimail_using_subcommand auth; and not __fish_seen_subcommand_from login import-smail status logout help" -l debug -d 'Log every HTTP request and response (secrets are redacted)'
complete -c apimail -n "__fish_apimail_using_subcommand auth; and not __fish_seen_subcommand_from login import-smail status logout help" -s h -l help -d 'Print help'
complete -c apimail -n "__fish_apimail_using_subcommand auth; and not __fish_seen_subcommand_from login import-smail status logout help" -f -a "login" -d 'Authorize an account in the browser and store its tokens'
complete -c apimail -n "__fish_apimail_using_subcommand auth; and not __fish_seen_subcommand_from login import-smail status logout help" -f -a "import-smail" -d 'Import the OAuth credentials of an SMAIL installation (smail_refreshtoken.ini)'
complete -c apimail -n "__fish_apimail_using_subcommand auth; and not __fish_seen_subcommand_from login import-smail status logout help" -f -a "status" -d 'List accounts, their scopes, token expiry and where tokens are kept'
complete -c apimail -n "__fish_apimail_using_subcommand auth; and not __fish_seen_subcommand_from login import-smail status logout help" -f -a "logout" -d 'Delete an account\'s stored tokens, revoking them at the provider'
complete -c apimail -n "__fish_apimail_using_subcommand auth; and not __fish_seen_subcommand_from login import-smail status logout help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c apimail -n "__fish_apimail_using_subcommand auth; and __fish_seen_subcommand_from login" -l config -d 'Configuration file' -r -F
complete -c apimail -n "__fish_apimail_using_subcommand auth; and __fish_seen_subcommand_from login" -s v -l verbose -d 'Say more: -v shows progress and retries'
complete -c apimail -n "__fish_apimail_using_subcommand auth; and __fish_seen_subcommand_from login" -l debug -d 'Log every HTTP request and response (secrets are redacted)'
complete -c apimail -n "__fish_apimail_using_subcommand auth; and __fish_seen_subcommand_from login" -s h -l help -d 'Print help'
complete -c apimail -n "__fish_apimail_using_subcommand auth; and __fish_seen_subcommand_from login" -f -a "gmail" -d 'Authorize a Google account (Gmail API, scope gmail.send)'
complete -c apimail -n "__fish_apimail_using_subcommand auth; and __fish_seen_subcommand_from login" -f -a "graph" -d 'Authorize a Microsoft 365 or Outlook.com account (Microsoft Graph, Mail.Send)'
complete -c apimail -n "__fish_apimail_using_subcommand auth; and __fish_seen_subcommand_from login" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c apimail -n "__fish_apimail_using_subcommand auth; and __fish_seen_subcommand_from import-smail" -l account -d 'Name for the imported account' -r
complete -c apimail -n "__fish_apimail_using_subcommand auth; and __fish_seen_subcommand_from import-smail" -l config -d 'Configuration file' -r -F
complete -c apimail -n "__fish_apimail_using_subcommand auth; and __fish_seen_subcommand_from import-smail" -s v -l verbose -d 'Say more: -v shows progress and retries'
complete -c apimail -n "__fish_apimail_using_subcommand auth; and __fish_seen_subcommand_from import-smail" -l debug -d 'Log every HTTP request and response (secrets are redacted)'
complete -c apimail -n "__fish_apimail_using_subcommand auth; and __fish_seen_subcommand_from import-smail" -s h -l help -d 'Print help'
complete -c apimail -n "__fish_apimail_using_subcommand auth; and __fish_seen_subcommand_from status" -l account -d 'Show only this account' -r
complete -c apimail -n "__fish_apimail_using_subcommand auth; and __fish_seen_subcommand_from status" -l config -d 'Configuration file' -r -F
complete -c apimail -n "__fish_apimail_using_subcommand auth; and __fish_seen_subcommand_from status" -s v -l verbose -d 'Say more: -v shows progress and retries'
complete -c apimail -n "__fish_apimail_using_subcommand auth; and __fish_seen_subcommand_from status" -l debug -d 'Log every HTTP request and response (secrets are redacted)'
complete -c apimail -n "__fish_apimail_using_subcommand auth; and __fish_seen_subcommand_from status" -s h -l help -d 'Print help'
complete -c apimail -n "__fish_apimail_using_subcommand auth; and __fish_seen_subcommand_from logout" -l account -d 'The account to log out' -r
complete -c apimail -n "__fish_apimail_using_subcommand auth; and __fish_seen_subcommand_from logout" -l config -d 'Configuration file' -r -F
complete -c apimail -n "__fish_apimail_using_subcommand auth; and __fish_seen_subcommand_from logout" -s v -l verbose -d 'Say more: -v shows progress and retries'
complete -c apimail -n "__fish_apimail_using_subcommand auth; and __fish_seen_subcommand_from logout" -l debug -d 'Log every HTTP request and response (secrets are redacted)'
complete -c apimail -n "__fish_apimail_using_subcommand auth; and __fish_seen_subcommand_from logout" -s h -l help -d 'Print help'
complete -c apimail -n "__fish_apimail_using_subcommand auth; and __fish_seen_subcommand_from help" -f -a "login" -d 'Authorize an account in the browser and store its tokens'
complete -c apimail -n "__fish_apimail_using_subcommand auth; and __fish_seen_subcommand_from help" -f -a "import-smail" -d 'Import the OAuth credentials of an SMAIL installation (smail_refreshtoken.ini)'
complete -c apimail -n "__fish_apimail_using_subcommand auth; and __fish_seen_subcommand_from help" -f -a "status" -d 'List accounts, their scopes, token expiry and where tokens are kept'
complete -c apimail -n "__fish_apimail_using_subcommand auth; and __fish_seen_subcommand_from help" -f -a "logout" -d 'Delete an account\'s stored tokens, revoking them at the provider'
complete -c apimail -n "__fish_apimail_using_subcommand auth; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c apimail -n "__fish_apimail_using_subcommand sendmail" -l config -d 'Configuration file' -r -F
complete -c apimail -n "__fish_apimail_using_subcommand sendmail" -s v -l verbose -d 'Say more: -v shows progress and retries'
complete -c apimail -n "__fish_apimail_using_subcommand sendmail" -l debug -d 'Log every HTTP request and response (secrets are redacted)'
complete -c apimail -n "__fish_apimail_using_subcommand queue; and not __fish_seen_subcommand_from list flush show retry drop help" -l config -d 'Configuration file' -r -F
complete -c apimail -n "__fish_apimail_using_subcommand queue; and not __fish_seen_subcommand_from list flush show retry drop help" -s v -l verbose -d 'Say more: -v shows progress and retries'
complete -c apimail -n "__fish_apimail_using_subcommand queue; and not __fish_seen_subcommand_from list flush show retry drop help" -l debug -d 'Log every HTTP request and response (secrets are redacted)'
complete -c apimail -n "__fish_apimail_using_subcommand queue; and not __fish_seen_subcommand_from list flush show retry drop help" -s h -l help -d 'Print help'
complete -c apimail -n "__fish_apimail_using_subcommand queue; and not __fish_seen_subcommand_from list flush show retry drop help" -f -a "list" -d 'List queued, held and failed messages, oldest first, a page at a time, and what each held one waits for'
complete -c apimail -n "__fish_apimail_using_subcommand queue; and not __fish_seen_subcommand_from list flush show retry drop help" -f -a "flush" -d 'Send the messages that are due now'
complete -c apimail -n "__fish_apimail_using_subcommand queue; and not __fish_seen_subcommand_from list flush show retry drop help" -f -a "show" -d 'Show one message\'s details and headers'
complete -c apimail -n "__fish_apimail_using_subcommand queue; and not __fish_seen_subcommand_from list flush show retry drop help" -f -a "retry" -d 'Make a message due now (or put a failed one back in the queue)'
complete -c apimail -n "__fish_apimail_using_subcommand queue; and not __fish_seen_subcommand_from list flush show retry drop help" -f -a "drop" -d 'Delete a message from the outbox'
complete -c apimail -n "__fish_apimail_using_subcommand queue; and not __fish_seen_subcommand_from list flush show retry drop help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c apimail -n "__fish_apimail_using_subcommand queue; and __fish_seen_subcommand_from list" -l limit -d 'At most N messages' -r
complete -c apimail -n "__fish_apimail_using_subcommand queue; and __fish_seen_subcommand_from list" -l offset -d 'Skip the first N (the next page starts at the last one\'s number)' -r
complete -c apimail -n "__fish_apimail_using_subcommand queue; and __fish_seen_subcommand_from list" -l config -d 'Configuration file' -r -F
complete -c apimail -n "__fish_apimail_using_subcommand queue; and __fish_seen_subcommand_from list" -l json -d 'Print JSON Lines: one object per message'
complete -c apimail -n "__fish_apimail_using_subcommand queue; and __fish_seen_subcommand_from list" -s v -l verbose -d 'Say more: -v shows progress and retries'
complete -c apimail -n "__fish_apimail_using_subcommand queue; and __fish_seen_subcommand_from list" -l debug -d 'Log every HTTP request and response (secrets are redacted)'
complete -c apimail -n "__fish_apimail_using_subcommand queue; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c apimail -n "__fish_apimail_using_subcommand queue; and __fish_seen_subcommand_from flush" -l account -d 'Only this account\'s messages' -r
complete -c apimail -n "__fish_apimail_using_subcommand queue; and __fish_seen_subcommand_from flush" -l config -d 'Configuration file' -r -F
complete -c apimail -n "__fish_apimail_using_subcommand queue; and __fish_seen_subcommand_from flush" -l all -d 'Also the messages that are not due yet'
complete -c apimail -n "__fish_apimail_using_subcommand queue; and __fish_seen_subcommand_from flush" -s v -l verbose -d 'Say more: -v shows progress and retries'
complete -c apimail -n "__fish_apimail_using_subcommand queue; and __fish_seen_subcommand_from flush" -l debug -d 'Log every HTTP request and response (secrets are redacted)'
complete -c apimail -n "__fish_apimail_using_subcommand queue; and __fish_seen_subcommand_from flush" -s h -l help -d 'Print help'
complete -c apimail -n "__fish_apimail_using_subcommand queue; and __fish_seen_subcommand_from show" -l config -d 'Configuration file' -r -F
complete -c apimail -n "__fish_apimail_using_subcommand queue; and __fish_seen_subcommand_from show" -s v -l verbose -d 'Say more: -v shows progress and retries'
complete -c apimail -n "__fish_apimail_using_subcommand queue; and __fish_seen_subcommand_from show" -l debug -d 'Log every HTTP request and response (secrets are redacted)'
complete -c apimail -n "__fish_apimail_using_subcommand queue; and __fish_seen_subcommand_from show" -s h -l help -d 'Print help'
complete -c apimail -n "__fish_apimail_using_subcommand queue; and __fish_seen_subcommand_from retry" -l config -d 'Configuration file' -r -F
complete -c apimail -n "__fish_apimail_using_subcommand queue; and __fish_seen_subcommand_from retry" -s v -l verbose -d 'Say more: -v shows progress and retries'
complete -c apimail -n "__fish_apimail_using_subcommand queue; and __fish_seen_subcommand_from retry" -l debug -d 'Log every HTTP request and response (secrets are redacted)'
complete -c apimail -n "__fish_apimail_using_subcommand queue; and __fish_seen_subcommand_from retry" -s h -l help -d 'Print help'
complete -c apimail -n "__fish_apimail_using_subcommand queue; and __fish_seen_subcommand_from drop" -l config -d 'Configuration file' -r -F
complete -c apimail -n "__fish_apimail_using_subcommand queue; and __fish_seen_subcommand_from drop" -s v -l verbose -d 'Say more: -v shows progress and retries'
complete -c apimail -n "__fish_apimail_using_subcommand queue; and __fish_seen_subcommand_from drop" -l debug -d 'Log every HTTP request and response (secrets are redacted)'
complete -c apimail -n "__fish_apimail_using_subcommand queue; and __fish_seen_subcommand_from drop" -s h -l help -d 'Print help'
complete -c apimail -n "__fish_apimail_using_subcommand queue; and __fish_seen_subcommand_from help" -f -a "list" -d 'List queued, held and failed messages, oldest first, a page at a time, and what each held one waits for'
complete -c apimail -n "__fish_apimail_using_subcommand queue; and __fish_seen_subcommand_from help" -f -a "flush" -d 'Send the messages that are due now'
complete -c apimail -n "__fish_apimail_using_subcommand queue; and __fish_seen_subcommand_from help" -f -a "show" -d 'Show one message\'s details and headers'
complete -c apimail -n "__fish_apimail_using_subcommand queue; and __fish_seen_subcommand_from help" -f -a "retry" -d 'Make a message due now (or put a failed one back in the queue)'
complete -c apimail -n "__fish_apimail_using_subcommand queue; and __fish_seen_subcommand_from help" -f -a "drop" -d 'Delete a message from the outbox'
complete -c apimail -n "__fish_apimail_using_subcommand queue; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c apimail -n "__fish_apimail_using_subcommand doctor" -l account -d 'The account to check (default: $APIMAIL_ACCOUNT, else the default)' -r
complete -c apimail -n "__fish_apimail_using_subcommand doctor" -l config -d 'Configuration file' -r -F
complete -c apimail -n "__fish_apimail_using_subcommand doctor" -l json -d 'Print every check as one JSON object on standard output'
complete -c apimail -n "__fish_apimail_using_subcommand doctor" -s v -l verbose -d 'Say more: -v shows progress and retries'
complete -c apimail -n "__fish_apimail_using_subcommand doctor" -l debug -d 'Log every HTTP request and response (secrets are redacted)'
complete -c apimail -n "__fish_apimail_using_subcommand doctor" -s h -l help -d 'Print help'
complete -c apimail -n "__fish_apimail_using_subcommand log" -l since -d 'Only records since DURATION ago (30m, 2h, 7d), a DATE (2026-11-29) or an RFC 3339 time' -r
complete -c apimail -n "__fish_apimail_using_subcommand log" -l account -d 'Only this account\'s records' -r
complete -c apimail -n "__fish_apimail_using_subcommand log" -l status -d 'Only records with this outcome (repeatable)' -r -f -a "sent\t'Accepted by the provider'
queued\t'Waiting in the outbox for another attempt'
held\t'Waiting for its sender, a login or `queue retry` (see `queue list`)'
failed\t'Given up on'
uncertain\t'Maybe sent: the provider\'s answer never came'
verified_sent\t'Found in the mailbox\'s sent messages after an uncertain attempt'
dropped\t'Removed from the outbox unsent (`queue drop`, the admin console)'"
complete -c apimail -n "__fish_apimail_using_subcommand log" -l config -d 'Configuration file' -r -F
complete -c apimail -n "__fish_apimail_using_subcommand log" -l json -d 'Print JSON Lines: one object per record'
complete -c apimail -n "__fish_apimail_using_subcommand log" -l csv -d 'Print CSV with a header row'
complete -c apimail -n "__fish_apimail_using_subcommand log" -s v -l verbose -d 'Say more: -v shows progress and retries'
complete -c apimail -n "__fish_apimail_using_subcommand log" -l debug -d 'Log every HTTP request and response (secrets are redacted)'
complete -c apimail -n "__fish_apimail_using_subcommand log" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c apimail -n "__fish_apimail_using_subcommand relay; and not __fish_seen_subcommand_from user help" -l listen -d 'Listen on ADDR:PORT, plain with STARTTLS (repeatable)' -r
complete -c apimail -n "__fish_apimail_using_subcommand relay; and not __fish_seen_subcommand_from user help" -l listen-tls -d 'Listen on ADDR:PORT with implicit TLS (repeatable)' -r
complete -c apimail -n "__fish_apimail_using_subcommand relay; and not __fish_seen_subcommand_from user help" -l admin -d 'Also serve the admin console on ADDR:PORT (off loopback over TLS)' -r
complete -c apimail -n "__fish_apimail_using_subcommand relay; and not __fish_seen_subcommand_from user help" -l config -d 'Configuration file' -r -F
complete -c apimail -n "__fish_apimail_using_subcommand relay; and not __fish_seen_subcommand_from user help" -s v -l verbose -d 'Say more: -v shows progress and retries'
complete -c apimail -n "__fish_apimail_using_subcommand relay; and not __fish_seen_subcommand_from user help" -l debug -d 'Log every HTTP request and response (secrets are redacted)'
complete -c apimail -n "__fish_apimail_using_subcommand relay; and not __fish_seen_subcommand_from user help" -s h -l help -d 'Print help'
complete -c apimail -n "__fish_apimail_using_subcommand relay; and not __fish_seen_subcommand_from user help" -f -a "user" -d 'Add, list or remove the users devices log in as (SMTP AUTH)'
complete -c apimail -n "__fish_apimail_using_subcommand relay; and not __fish_seen_subcommand_from user help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c apimail -n "__fish_apimail_using_subcommand relay; and __fish_seen_subcommand_from user" -l config -d 'Configuration file' -r -F
complete -c apimail -n "__fish_apimail_using_subcommand relay; and __fish_seen_subcommand_from user" -s v -l verbose -d 'Say more: -v shows progress and retries'
complete -c apimail -n "__fish_apimail_using_subcommand relay; and __fish_seen_subcommand_from user" -l debug -d 'Log every HTTP request and response (secrets are redacted)'
complete -c apimail -n "__fish_apimail_using_subcommand relay; and __fish_seen_subcommand_from user" -s h -l help -d 'Print help'
complete -c apimail -n "__fish_apimail_using_subcommand relay; and __fish_seen_subcommand_from user" -f -a "add" -d 'Add a user, or give one a new password or account. The password is read from a prompt, or from the first line of standard input'
complete -c apimail -n "__fish_apimail_using_subcommand relay; and __fish_seen_subcommand_from user" -f -a "list" -d 'List the users and their accounts'
complete -c apimail -n "__fish_apimail_using_subcommand relay; and __fish_seen_subcommand_from user" -f -a "remove" -d 'Remove a user'
complete -c apimail -n "__fish_apimail_using_subcommand relay; and __fish_seen_subcommand_from user" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c apimail -n "__fish_apimail_using_subcommand relay; and __fish_seen_subcommand_from help" -f -a "user" -d 'Add, list or remove the users devices log in as (SMTP AUTH)'
complete -c apimail -n "__fish_apimail_using_subcommand relay; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c apimail -n "__fish_apimail_using_subcommand merge; and not __fish_seen_subcommand_from status help" -l data -d 'The sheet: .csv (UTF-8, with or without a BOM, or see --data-encoding) or .xlsx' -r -F
complete -c apimail -n "__fish_apimail_using_subcommand merge; and not __fish_seen_subcommand_from status help" -l template -d 'The template (TOML)' -r -F
complete -c apimail -n "__fish_apimail_using_subcommand merge; and not __fish_seen_subcommand_from status help" -l data-encoding -d 'The CSV\'s encoding' -r -f -a "utf-8\t'UTF-8, with or without a byte order mark'
cp932\t'Shift_JIS as Windows extends it (Excel\'s CSV in Japan)'"
complete -c apimail -n "__fish_apimail_using_subcommand merge; and not __fish_seen_subcommand_from status help" -l id-column -d 'The column that identifies each row (default: a hash of the row\'s values)' -r
complete -c apimail -n "__fish_apimail_using_subcommand merge; and not __fish_seen_subcommand_from status help" -l name -d 'The merge\'s name, which keeps its record (default: the data file\'s name)' -r
complete -c apimail -n "__fish_apimail_using_subcommand merge; and not __fish_seen_subcommand_from status help" -l account -d 'The account to send from (default: $APIMAIL_ACCOUNT, else the configured default)' -r
complete -c apimail -n "__fish_apimail_using_subcommand merge; and not __fish_seen_subcommand_from status help" -l preview -d 'Write the first N messages as .eml files (dry run), or send N to --test-to' -r
complete -c apimail -n "__fish_apimail_using_subcommand merge; and not __fish_seen_subcommand_from status help" -l preview-dir -d 'Where the previews go (default: NAME-preview)' -r -F
complete -c apimail -n "__fish_apimail_using_subcommand merge; and not __fish_seen_subcommand_from status help" -l test-to -d 'Send the first --preview messages to this address instead of the rows\' recipients' -r
complete -c apimail -n "__fish_apimail_using_subcommand merge; and not __fish_seen_subcommand_from status help" -l report -d 'Write every row\'s outcome as CSV (its failed rows can be given to --data again)' -r -F
complete -c apimail -n "__fish_apimail_using_subcommand merge; and not __fish_seen_subcommand_from status help" -l daily-limit -d 'Send at most N messages in any 24 hours (the rest wait for another run)' -r
complete -c apimail -n "__fish_apimail_using_subcommand merge; and not __fish_seen_subcommand_from status help" -l per-minute -d 'Send at most N messages a minute (default: the provider\'s pace)' -r
complete -c apimail -n "__fish_apimail_using_subcommand merge; and not __fish_seen_subcommand_from status help" -l config -d 'Configuration file' -r -F
complete -c apimail -n "__fish_apimail_using_subcommand merge; and not __fish_seen_subcommand_from status help" -l send -d 'Send (without it, nothing is sent)'
complete -c apimail -n "__fish_apimail_using_subcommand merge; and not __fish_seen_subcommand_from status help" -l skip-invalid -d 'Send the good rows even when others have errors (they are reported)'
complete -c apimail -n "__fish_apimail_using_subcommand merge; and not __fish_seen_subcommand_from status help" -l resend-failed -d 'Send again the rows that failed in an earlier run'
complete -c apimail -n "__fish_apimail_using_subcommand merge; and not __fish_seen_subcommand_from status help" -s v -l verbose -d 'Say more: -v shows progress and retries'
complete -c apimail -n "__fish_apimail_using_subcommand merge; and not __fish_seen_subcommand_from status help" -l debug -d 'Log every HTTP request and response (secrets are redacted)'
complete -c apimail -n "__fish_apimail_using_subcommand merge; and not __fish_seen_subcommand_from status help" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c apimail -n "__fish_apimail_using_subcommand merge; and not __fish_seen_subcommand_from status help" -f -a "status" -d 'Show a merge\'s counts from its record; with --report, every row it sent or tried'
complete -c apimail -n "__fish_apimail_using_subcommand merge; and not __fish_seen_subcommand_from status help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c apimail -n "__fish_apimail_using_subcommand merge; and __fish_seen_subcommand_from status" -l report -d 'Write every recorded row (row, key, status, Message-ID, error) as CSV' -r -F
complete -c apimail -n "__fish_apimail_using_subcommand merge; and __fish_seen_subcommand_from status" -l config -d 'Configuration file' -r -F
complete -c apimail -n "__fish_apimail_using_subcommand merge; and __fish_seen_subcommand_from status" -s v -l verbose -d 'Say more: -v shows progress and retries'
complete -c apimail -n "__fish_apimail_using_subcommand merge; and __fish_seen_subcommand_from status" -l debug -d 'Log every HTTP request and response (secrets are redacted)'
complete -c apimail -n "__fish_apimail_using_subcommand merge; and __fish_seen_subcommand_from status" -s h -l help -d 'Print help'
complete -c apimail -n "__fish_apimail_using_subcommand merge; and __fish_seen_subcommand_from help" -f -a "status" -d 'Show a merge\'s counts from its record; with --report, every row it sent or tried'
complete -c apimail -n "__fish_apimail_using_subcommand merge; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c apimail -n "__fish_apimail_using_subcommand admin; and not __fish_seen_subcommand_from serve user token help" -l config -d 'Configuration file' -r -F
complete -c apimail -n "__fish_apimail_using_subcommand admin; and not __fish_seen_subcommand_from serve user token help" -s v -l verbose -d 'Say more: -v shows progress and retries'
complete -c apimail -n "__fish_apimail_using_subcommand admin; and not __fish_seen_subcommand_from serve user token help" -l debug -d 'Log every HTTP request and response (secrets are redacted)'
complete -c apimail -n "__fish_apimail_using_subcommand admin; and not __fish_seen_subcommand_from serve user token help" -s h -l help -d 'Print help'
complete -c apimail -n "__fish_apimail_using_subcommand admin; and not __fish_seen_subcommand_from serve user token help" -f -a "serve" -d 'Serve the admin console (web pages and a JSON API) until stopped'
complete -c apimail -n "__fish_apimail_using_subcommand admin; and not __fish_seen_subcommand_from serve user token help" -f -a "user" -d 'Add, list or remove the administrators who sign in to the console'
complete -c apimail -n "__fish_apimail_using_subcommand admin; and not __fish_seen_subcommand_from serve user token help" -f -a "token" -d 'Create, list or revoke the API\'s bearer tokens'
complete -c apimail -n "__fish_apimail_using_subcommand admin; and not __fish_seen_subcommand_from serve user token help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c apimail -n "__fish_apimail_using_subcommand admin; and __fish_seen_subcommand_from serve" -l listen -d 'Listen on ADDR:PORT (default: [admin] listen, else 127.0.0.1:8025)' -r
complete -c apimail -n "__fish_apimail_using_subcommand admin; and __fish_seen_subcommand_from serve" -l config -d 'Configuration file' -r -F
complete -c apimail -n "__fish_apimail_using_subcommand admin; and __fish_seen_subcommand_from serve" -s v -l verbose -d 'Say more: -v shows progress and retries'
complete -c apimail -n "__fish_apimail_using_subcommand admin; and __fish_seen_subcommand_from serve" -l debug -d 'Log every HTTP request and response (secrets are redacted)'
complete -c apimail -n "__fish_apimail_using_subcommand admin; and __fish_seen_subcommand_from serve" -s h -l help -d 'Print help'
complete -c apimail -n "__fish_apimail_using_subcommand admin; and __fish_seen_subcommand_from user" -l config -d 'Configuration file' -r -F
complete -c apimail -n "__fish_apimail_using_subcommand admin; and __fish_seen_subcommand_from user" -s v -l verbose -d 'Say more: -v shows progress and retries'
complete -c apimail -n "__fish_apimail_using_subcommand admin; and __fish_seen_subcommand_from user" -l debug -d 'Log every HTTP request and response (secrets are redacted)'
complete -c apimail -n "__fish_apimail_using_subcommand admin; and __fish_seen_subcommand_from user" -s h -l help -d 'Print help'
complete -c apimail -n "__fish_apimail_using_subcommand admin; and __fish_seen_subcommand_from user" -f -a "add" -d 'Add an administrator, or give one a new password. The password is read from a prompt, or from the first line of standard input'
complete -c apimail -n "__fish_apimail_using_subcommand admin; and __fish_seen_subcommand_from user" -f -a "list" -d 'List the administrators'
complete -c apimail -n "__fish_apimail_using_subcommand admin; and __fish_seen_subcommand_from user" -f -a "remove" -d 'Remove an administrator'
complete -c apimail -n "__fish_apimail_using_subcommand admin; and __fish_seen_subcommand_from user" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c apimail -n "__fish_apimail_using_subcommand admin; and __fish_seen_subcommand_from token" -l config -d 'Configuration file' -r -F
complete -c apimail -n "__fish_apimail_using_subcommand admin; and __fish_seen_subcommand_from token" -s v -l verbose -d 'Say more: -v shows progress and retries'
complete -c apimail -n "__fish_apimail_using_subcommand admin; and __fish_seen_subcommand_from token" -l debug -d 'Log every HTTP request and response (secrets are redacted)'
complete -c apimail -n "__fish_apimail_using_subcommand admin; and __fish_seen_subcommand_from token" -s h -l help -d 'Print help'
complete -c apimail -n "__fish_apimail_using_subcommand admin; and __fish_seen_subcommand_from token" -f -a "create" -d 'Create a token and print it, once; only its hash is kept'
complete -c apimail -n "__fish_apimail_using_subcommand admin; and __fish_seen_subcommand_from token" -f -a "list" -d 'List the tokens (names only; tokens are never shown again)'
complete -c apimail -n "__fish_apimail_using_subcommand admin; and __fish_seen_subcommand_from token" -f -a "revoke" -d 'Revoke a token'
complete -c apimail -n "__fish_apimail_using_subcommand admin; and __fish_seen_subcommand_from token" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c apimail -n "__fish_apimail_using_subcommand admin; and __fish_seen_subcommand_from help" -f -a "serve" -d 'Serve the admin console (web pages and a JSON API) until stopped'
complete -c apimail -n "__fish_apimail_using_subcommand admin; and __fish_seen_subcommand_from help" -f -a "user" -d 'Add, list or remove the administrators who sign in to the console'
complete -c apimail -n "__fish_apimail_using_subcommand admin; and __fish_seen_subcommand_from help" -f -a "token" -d 'Create, list or revoke the API\'s bearer tokens'
complete -c apimail -n "__fish_apimail_using_subcommand admin; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c apimail -n "__fish_apimail_using_subcommand store; and not __fish_seen_subcommand_from migrate key tokens help" -l config -d 'Configuration file' -r -F
complete -c apimail -n "__fish_apimail_using_subcommand store; and not __fish_seen_subcommand_from migrate key tokens help" -s v -l verbose -d 'Say more: -v shows progress and retries'
complete -c apimail -n "__fish_apimail_using_subcommand store; and not __fish_seen_subcommand_from migrate key tokens help" -l debug -d 'Log every HTTP request and response (secrets are redacted)'
complete -c apimail -n "__fish_apimail_using_subcommand store; and not __fish_seen_subcommand_from migrate key tokens help" -s h -l help -d 'Print help'
complete -c apimail -n "__fish_apimail_using_subcommand store; and not __fish_seen_subcommand_from migrate key tokens help" -f -a "migrate" -d 'Create or upgrade the store\'s tables (versioned migrations; safe to run again, from any node)'
complete -c apimail -n "__fish_apimail_using_subcommand store; and not __fish_seen_subcommand_from migrate key tokens help" -f -a "key" -d 'The key accounts\' tokens in the store are encrypted under'
complete -c apimail -n "__fish_apimail_using_subcommand store; and not __fish_seen_subcommand_from migrate key tokens help" -f -a "tokens" -d 'Accounts\' OAuth tokens in the store'
complete -c apimail -n "__fish_apimail_using_subcommand store; and not __fish_seen_subcommand_from migrate key tokens help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c apimail -n "__fish_apimail_using_subcommand store; and __fish_seen_subcommand_from migrate" -l config -d 'Configuration file' -r -F
complete -c apimail -n "__fish_apimail_using_subcommand store; and __fish_seen_subcommand_from migrate" -l check -d 'Only report the schema\'s version; exit 78 if it needs migrating'
complete -c apimail -n "__fish_apimail_using_subcommand store; and __fish_seen_subcommand_from migrate" -s v -l verbose -d 'Say more: -v shows progress and retries'
complete -c apimail -n "__fish_apimail_using_subcommand store; and __fish_seen_subcommand_from migrate" -l debug -d 'Log every HTTP request and response (secrets are redacted)'
complete -c apimail -n "__fish_apimail_using_subcommand store; and __fish_seen_subcommand_from migrate" -s h -l help -d 'Print help'
complete -c apimail -n "__fish_apimail_using_subcommand store; and __fish_seen_subcommand_from key" -l config -d 'Configuration file' -r -F
complete -c apimail -n "__fish_apimail_using_subcommand store; and __fish_seen_subcommand_from key" -s v -l verbose -d 'Say more: -v shows progress and retries'
complete -c apimail -n "__fish_apimail_using_subcommand store; and __fish_seen_subcommand_from key" -l debug -d 'Log every HTTP request and response (secrets are redacted)'
complete -c apimail -n "__fish_apimail_using_subcommand store; and __fish_seen_subcommand_from key" -s h -l help -d 'Print help'
complete -c apimail -n "__fish_apimail_using_subcommand store; and __fish_seen_subcommand_from key" -f -a "new" -d 'Write a new random key (32 bytes, base64) to a file, mode 0600; never over an existing file'
complete -c apimail -n "__fish_apimail_using_subcommand store; and __fish_seen_subcommand_from key" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c apimail -n "__fish_apimail_using_subcommand store; and __fish_seen_subcommand_from tokens" -l config -d 'Configuration file' -r -F
complete -c apimail -n "__fish_apimail_using_subcommand store; and __fish_seen_subcommand_from tokens" -s v -l verbose -d 'Say more: -v shows progress and retries'
complete -c apimail -n "__fish_apimail_using_subcommand store; and __fish_seen_subcommand_from tokens" -l debug -d 'Log every HTTP request and response (secrets are redacted)'
complete -c apimail -n "__fish_apimail_using_subcommand store; and __fish_seen_subcommand_from tokens" -s h -l help -d 'Print help'
complete -c apimail -n "__fish_apimail_using_subcommand store; and __fish_seen_subcommand_from tokens" -f -a "push" -d 'Copy this machine\'s logged-in accounts\' tokens into the store, encrypted (after `auth login`)'
complete -c apimail -n "__fish_apimail_using_subcommand store; and __fish_seen_subcommand_from tokens" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c apimail -n "__fish_apimail_using_subcommand store; and __fish_seen_subcommand_from help" -f -a "migrate" -d 'Create or upgrade the store\'s tables (versioned migrations; safe to run again, from any node)'
complete -c apimail -n "__fish_apimail_using_subcommand store; and __fish_seen_subcommand_from help" -f -a "key" -d 'The key accounts\' tokens in the store are encrypted under'
complete -c apimail -n "__fish_apimail_using_subcommand store; and __fish_seen_subcommand_from help" -f -a "tokens" -d 'Accounts\' OAuth tokens in the store'
complete -c apimail -n "__fish_apimail_using_subcommand store; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c apimail -n "__fish_apimail_using_subcommand help; and not __fish_seen_subcommand_from send auth sendmail queue doctor log relay merge admin store help" -f -a "send" -d 'Compose a message and send it (or, with --dry-run, print it)'
complete -c apimail -n "__fish_apimail_using_subcommand help; and not __fish_seen_subcommand_from send auth sendmail queue doctor log relay merge admin store help" -f -a "auth" -d 'Authorize accounts, and inspect or remove their tokens'
complete -c apimail -n "__fish_apimail_using_subcommand help; and not __fish_seen_subcommand_from send auth sendmail queue doctor log relay merge admin store help" -f -a "sendmail" -d 'Work as sendmail: send the message on standard input (drop-in for programs)'
complete -c apimail -n "__fish_apimail_using_subcommand help; and not __fish_seen_subcommand_from send auth sendmail queue doctor log relay merge admin store help" -f -a "queue" -d 'List, flush, retry or drop messages waiting in the outbox'
complete -c apimail -n "__fish_apimail_using_subcommand help; and not __fish_seen_subcommand_from send auth sendmail queue doctor log relay merge admin store help" -f -a "doctor" -d 'Check the configuration, tokens, network, clock and queue, and explain any problem'
complete -c apimail -n "__fish_apimail_using_subcommand help; and not __fish_seen_subcommand_from send auth sendmail queue doctor log relay merge admin store help" -f -a "log" -d 'Show the delivery journal: what was sent, queued, held or failed, and why'
complete -c apimail -n "__fish_apimail_using_subcommand help; and not __fish_seen_subcommand_from send auth sendmail queue doctor log relay merge admin store help" -f -a "relay" -d 'Run an SMTP relay for printers, scanners and applications that only speak SMTP'
complete -c apimail -n "__fish_apimail_using_subcommand help; and not __fish_seen_subcommand_from send auth sendmail queue doctor log relay merge admin store help" -f -a "merge" -d 'Mail one letter to many: a CSV or .xlsx sheet and a template (a dry run without --send)'
complete -c apimail -n "__fish_apimail_using_subcommand help; and not __fish_seen_subcommand_from send auth sendmail queue doctor log relay merge admin store help" -f -a "admin" -d 'Serve the admin console (log, queue, accounts, API); manage its users and tokens'
complete -c apimail -n "__fish_apimail_using_subcommand help; and not __fish_seen_subcommand_from send auth sendmail queue doctor log relay merge admin store help" -f -a "store" -d 'Set up the shared PostgreSQL store (outbox, journal, pacing) for several machines'
complete -c apimail -n "__fish_apimail_using_subcommand help; and not __fish_seen_subcommand_from send auth sendmail queue doctor log relay merge admin store help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c apimail -n "__fish_apimail_using_subcommand help; and __fish_seen_subcommand_from auth" -f -a "login" -d 'Authorize an account in the browser and store its tokens'
complete -c apimail -n "__fish_apimail_using_subcommand help; and __fish_seen_subcommand_from auth" -f -a "import-smail" -d 'Import the OAuth credentials of an SMAIL installation (smail_refreshtoken.ini)'
complete -c apimail -n "__fish_apimail_using_subcommand help; and __fish_seen_subcommand_from auth" -f -a "status" -d 'List accounts, their scopes, token expiry and where tokens are kept'
complete -c apimail -n "__fish_apimail_using_subcommand help; and __fish_seen_subcommand_from auth" -f -a "logout" -d 'Delete an account\'s stored tokens, revoking them at the provider'
complete -c apimail -n "__fish_apimail_using_subcommand help; and __fish_seen_subcommand_from queue" -f -a "list" -d 'List queued, held and failed messages, oldest first, a page at a time, and what each held one waits for'
complete -c apimail -n "__fish_apimail_using_subcommand help; and __fish_seen_subcommand_from queue" -f -a "flush" -d 'Send the messages that are due now'
complete -c apimail -n "__fish_apimail_using_subcommand help; and __fish_seen_subcommand_from queue" -f -a "show" -d 'Show one message\'s details and headers'
complete -c apimail -n "__fish_apimail_using_subcommand help; and __fish_seen_subcommand_from queue" -f -a "retry" -d 'Make a message due now (or put a failed one back in the queue)'
complete -c apimail -n "__fish_apimail_using_subcommand help; and __fish_seen_subcommand_from queue" -f -a "drop" -d 'Delete a message from the outbox'
complete -c apimail -n "__fish_apimail_using_subcommand help; and __fish_seen_subcommand_from relay" -f -a "user" -d 'Add, list or remove the users devices log in as (SMTP AUTH)'
complete -c apimail -n "__fish_apimail_using_subcommand help; and __fish_seen_subcommand_from merge" -f -a "status" -d 'Show a merge\'s counts from its record; with --report, every row it sent or tried'
complete -c apimail -n "__fish_apimail_using_subcommand help; and __fish_seen_subcommand_from admin" -f -a "serve" -d 'Serve the admin console (web pages and a JSON API) until stopped'
complete -c apimail -n "__fish_apimail_using_subcommand help; and __fish_seen_subcommand_from admin" -f -a "user" -d 'Add, list or remove the administrators who sign in to the console'
complete -c apimail -n "__fish_apimail_using_subcommand help; and __fish_seen_subcommand_from admin" -f -a "token" -d 'Create, list or revoke the API\'s bearer tokens'
complete -c apimail -n "__fish_apimail_using_subcommand help; and __fish_seen_subcommand_from store" -f -a "migrate" -d 'Create or upgrade the store\'s tables (versioned migrations; safe to run again, from any node)'
complete -c apimail -n "__fish_apimail_using_subcommand help; and __fish_seen_subcommand_from store" -f -a "key" -d 'The key accounts\' tokens in the store are encrypted under'
complete -c apimail -n "__fish_apimail_using_subcommand help; and __fish_seen_subcommand_from store" -f -a "tokens" -d 'Accounts\' OAuth tokens in the store'
