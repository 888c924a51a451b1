/* Helpers for tests that run other programs and write scratch files. */
#ifndef FEDC_TESTS_TEST_SUPPORT_H
#define FEDC_TESTS_TEST_SUPPORT_H

/* Runs argv[0] (a path) with the NULL-terminated argv and waits for it.
 * When out is not NULL, the program's standard output is collected into a
 * new NUL-terminated malloc'ed string. Returns the exit status, or -1 when
 * the program could not be run or was killed by a signal. */
int test_spawn(const char *const argv[], char **out);

/* Like test_spawn(), but out collects standard error too, interleaved. */
int test_spawn_merged(const char *const argv[], char **out);

/* Creates a new scratch folder under TMPDIR (or /tmp) and returns its
 * malloc'ed path. */
char *test_mkdtemp(void);

/* Removes the files in folder, then the folder itself (one level only). */
void test_rmtree(const char *folder);

/* A scratch folder for Check fixtures: test_scratch_make() creates it (and
 * aborts when it cannot), test_scratch_remove() deletes it, and
 * test_scratch_path() returns the malloc'ed path of a file name in it. */
extern char *test_scratch;
void test_scratch_make(void);
void test_scratch_remove(void);
char *test_scratch_path(const char *name);

#endif
