/* Child processes for fedc-sim --transport tls: start a program with its
 * output in a log file, wait for it with a timeout, stop it. */
#ifndef FEDC_SIM_PROC_H
#define FEDC_SIM_PROC_H

#include <sys/types.h>

/* Starts argv[0] (a path, or a name looked up in PATH) with argv, its
 * stdout and stderr appended to log_path and stdin from /dev/null.
 * Returns 0 and the pid, or FEDC_ECHILD when it cannot be started. */
int fedc_proc_spawn(char *const argv[], const char *log_path, pid_t *pid);

/* Waits up to timeout seconds for pid to exit. Returns 1 and its exit
 * status (128 + signal number when a signal ended it) in *status, or 0
 * when it is still running. */
int fedc_proc_wait(pid_t pid, double timeout, int *status);

/* Ends pid with SIGKILL and reaps it. */
void fedc_proc_kill(pid_t pid);

#endif
