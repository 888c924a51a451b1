#include "proc.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "util/error.h"

extern char **environ;

int fedc_proc_spawn(char *const argv[], const char *log_path, pid_t *pid)
{
  posix_spawn_file_actions_t actions;
  int rc;

  if (posix_spawn_file_actions_init(&actions) != 0)
    return FEDC_ENOMEM;
  rc = posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null",
                                        O_RDONLY, 0);
  if (rc == 0)
    rc = posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log_path,
                                          O_WRONLY | O_CREAT | O_APPEND,
                                          0644);
  if (rc == 0)
    rc = posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO,
                                          STDERR_FILENO);
  if (rc == 0)
    rc = posix_spawnp(pid, argv[0], &actions, NULL, argv, environ);
  posix_spawn_file_actions_destroy(&actions);
  return rc == 0 ? 0 : FEDC_ECHILD;
}

static int decode_status(int raw)
{
  if (WIFEXITED(raw))
    return WEXITSTATUS(raw);
  if (WIFSIGNALED(raw))
    return 128 + WTERMSIG(raw);
  return 255;
}

int fedc_proc_wait(pid_t pid, double timeout, int *status)
{
  struct timespec pause = { .tv_sec = 0, .tv_nsec = 20 * 1000 * 1000 };
  double waited = 0.0;
  int raw = 0;

  for (;;) {
    pid_t r = waitpid(pid, &raw, WNOHANG);

    if (r == pid) {
      *status = decode_status(raw);
      return 1;
    }
    if (r < 0 && errno != EINTR) {
      *status = 255;
      return 1;
    }
    if (waited >= timeout)
      return 0;
    nanosleep(&pause, NULL);
    waited += 0.02;
  }
}

void fedc_proc_kill(pid_t pid)
{
  int raw;

  if (kill(pid, SIGKILL) == 0)
    waitpid(pid, &raw, 0);
}
