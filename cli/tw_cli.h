/*
 * tw_cli.h: the subcommands of the single `tutorwatch` executable, one file each (cmd_*.c),
 * registered in the table in main.c. Each takes argc/argv after the command name is removed
 * (argv[0] is the command name), prints its own --help, and returns the process exit status:
 * 0 success, 1 a failure the user can fix (bad rule file, unreadable input), 2 usage error,
 * 70 internal error (out of memory, state store failure).
 */
#ifndef TW_CLI_H
#define TW_CLI_H

#include <stdint.h>

int tw_cmd_run(int argc, char **argv);
int tw_cmd_gen(int argc, char **argv);
int tw_cmd_send(int argc, char **argv);
int tw_cmd_feed(int argc, char **argv);
int tw_cmd_check(int argc, char **argv);
int tw_cmd_journal(int argc, char **argv);
int tw_cmd_reload(int argc, char **argv);
int tw_cmd_test(int argc, char **argv);
int tw_cmd_keys(int argc, char **argv);
int tw_cmd_alerts(int argc, char **argv);
int tw_cmd_audit(int argc, char **argv);
int tw_cmd_replay(int argc, char **argv);
int tw_cmd_bench(int argc, char **argv);
int tw_cmd_eval(int argc, char **argv);

/*
 * tw_cli_show_caret: print line `line` of the file at path to stderr, indented, with a caret
 * under character column `col` (1-based, counted in UTF-8 characters, as libyaml and the rule
 * loader count them; tabs kept so the caret lines up). Lines longer than 4 KiB are cut. Silent
 * when the file or the line cannot be read. Used by `check` and `test` under file:line:col errors.
 */
void tw_cli_show_caret(const char *path, int line, int col);

/*
 * tw_cli_duration_ms: an option's duration, "500ms", "90s", "15m", "2h", "1d" or a bare "0"
 * (tw_duration_parse), into *out_ms; at most 2^61 ms. 0, or -1 for anything else.
 */
int tw_cli_duration_ms(const char *s, int64_t *out_ms);

#endif
