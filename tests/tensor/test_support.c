#include "test_support.h"

#include <dirent.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* Reads fd to its end into a new string. */
static char *read_all(int fd)
{
  size_t len = 0, cap = 4096;
  char *buf = malloc(cap);
  ssize_t n;

  if (buf == NULL)
    return NULL;
  while ((n = read(fd, buf + len, cap - len - 1)) > 0) {
    len += (size_t)n;
    if (cap - len < 2) {
      char *bigger = realloc(buf, cap * 2);

      if (bigger == NULL)
        break;
      buf = bigger;
      cap *= 2;
    }
  }
  buf[len] = '\0';
  return buf;
}

static int spawn(const char *const argv[], char **out, int merge)
{
  posix_spawn_file_actions_t actions;
  int pipe_fds[2] = { -1, -1 };
  int status;
  pid_t pid;

  if (out != NULL && pipe(pipe_fds) != 0)
    return -1;
  posix_spawn_file_actions_init(&actions);
  if (out != NULL) {
    posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], STDOUT_FILENO);
    if (merge)
      posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], STDERR_FILENO);
    posix_spawn_file_actions_addclose(&actions, pipe_fds[0]);
  }
  status = posix_spawn(&pid, argv[0], &actions, NULL, (char *const *)argv,
                       environ);
  posix_spawn_file_actions_destroy(&actions);
  if (out != NULL) {
    close(pipe_fds[1]);
    *out = status == 0 ? read_all(pipe_fds[0]) : NULL;
    close(pipe_fds[0]);
  }
  if (status != 0)
    return -1;
  if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status))
    return -1;
  return WEXITSTATUS(status);
}

int test_spawn(const char *const argv[], char **out)
{
  return spawn(argv, out, 0);
}

int test_spawn_merged(const char *const argv[], char **out)
{
  return spawn(argv, out, 1);
}

char *test_mkdtemp(void)
{
  const char *base = getenv("TMPDIR");
  char *path;

  if (base == NULL || base[0] == '\0')
    base = "/tmp";
  if (asprintf(&path, "%s/fedc-test-XXXXXX", base) < 0)
    return NULL;
  if (mkdtemp(path) == NULL) {
    free(path);
    return NULL;
  }
  return path;
}

void test_rmtree(const char *folder)
{
  DIR *dir = opendir(folder);
  struct dirent *e;

  if (dir == NULL)
    return;
  while ((e = readdir(dir)) != NULL) {
    char *path;

    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
      continue;
    if (asprintf(&path, "%s/%s", folder, e->d_name) >= 0) {
      unlink(path);
      free(path);
    }
  }
  closedir(dir);
  rmdir(folder);
}

char *test_scratch;

void test_scratch_make(void)
{
  test_scratch = test_mkdtemp();
  if (test_scratch == NULL)
    abort();
}

void test_scratch_remove(void)
{
  test_rmtree(test_scratch);
  free(test_scratch);
  test_scratch = NULL;
}

char *test_scratch_path(const char *name)
{
  char *path;

  if (asprintf(&path, "%s/%s", test_scratch, name) < 0)
    abort();
  return path;
}
