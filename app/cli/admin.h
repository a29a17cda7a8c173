/* admin.h — baleen-cli's administration commands over the settings database.
 *
 * Each takes the subcommand's argv (argv[0] is "baleen-cli NAME"), parses its
 * own options (--db FILE, --help), prints results to stdout and errors to
 * stderr, and returns the process exit status (0 success, 1 failure, 2 usage).
 * Built only when app/core (SQLite, libsoup) is available.
 */
#pragma once

int bln_admin_config (int argc, char **argv);  /* config get|set|list */
int bln_admin_keys (int argc, char **argv);    /* keys create|list|revoke */
int bln_admin_rules (int argc, char **argv);   /* rules add|list|remove|test */
int bln_admin_audit (int argc, char **argv);   /* audit tail|export */
